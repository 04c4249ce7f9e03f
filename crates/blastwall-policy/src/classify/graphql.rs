//! GraphQL classification: every root field of every operation of every document a request
//! carries (the URL's `?query=`, a JSON body, a JSON batch, or an `application/graphql` body),
//! through aliases, named and inline fragments and directives.
//!
//! Directives are not evaluated: a field under `@skip(if: true)` still counts, since classifying
//! more than runs is safe and classifying less is not. Every operation of a document counts, not
//! only the one `operationName` picks (which must exist all the same).

mod fast;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

use apollo_parser::Parser;
use apollo_parser::cst;
use blastwall_core::operation::OperationClass;
use serde::Deserialize;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::catalog::{GraphqlRules, Profile};
use crate::classify::{Collector, Engine, is_safe_method};
use crate::error::{ClassifyError, bounded};
use crate::normalize::NormalizedPath;

/// Most requests one JSON batch may hold.
const MAX_BATCH: usize = 64;
/// Most nesting of selection sets and fragment spreads followed at the root.
const MAX_DEPTH: usize = 64;
/// The most root-field names that merging fragments into their spreaders may copy for one
/// request: a document where each of many fragments spreads many others holding many fields
/// would otherwise cost the product of the three (minutes of CPU for one request of a few
/// hundred kilobytes). Real documents stay orders of magnitude below.
pub(super) const MAX_MERGE_WORK: usize = 100_000;
/// Parser limits: nesting, and tokens per document (a 10 KB document has a few thousand).
const PARSER_RECURSION: usize = 128;
const PARSER_TOKENS: usize = 200_000;

/// One GraphQL request: a document and the operation it asks for.
#[derive(Debug, Default)]
struct GqlRequest {
    query: Option<String>,
    operation_name: Option<String>,
}

/// The operations of every document of the request.
pub(super) fn classify(
    profile: &Profile,
    rules: &GraphqlRules,
    method: &str,
    path: &NormalizedPath,
    content_type: Option<&[u8]>,
    body: &[u8],
    engine: Engine,
) -> Result<Collector, ClassifyError> {
    let mut out = Collector::default();
    let mut requests = Vec::new();
    if let Some(q) = &path.query
        && let Some(r) = from_query_string(q)?
    {
        requests.push(r);
    }
    if !body.iter().all(u8::is_ascii_whitespace) {
        if content_type.is_some_and(is_graphql_document_type) {
            let doc = std::str::from_utf8(body).map_err(|_| ClassifyError::GraphqlRequest {
                detail: "the body is not UTF-8".into(),
            })?;
            requests.push(GqlRequest {
                query: Some(doc.to_owned()),
                operation_name: None,
            });
        } else {
            let parsed: Body =
                serde_json::from_slice(body).map_err(|e| ClassifyError::GraphqlRequest {
                    detail: bounded(&e.to_string()),
                })?;
            match parsed {
                Body::One(r) => requests.push(r),
                Body::Batch(rs) => requests.extend(rs),
            }
        }
    }
    if requests.is_empty() {
        if is_safe_method(method) {
            out.unknown(profile, method);
            return Ok(out);
        }
        return Err(ClassifyError::GraphqlRequest {
            detail: "no GraphQL query in the request".into(),
        });
    }
    for r in requests {
        let Some(doc) = r.query else {
            return Err(ClassifyError::GraphqlRequest {
                detail: "a request has no `query` (persisted queries cannot be classified)".into(),
            });
        };
        classify_document(
            profile,
            rules,
            method,
            &doc,
            r.operation_name.as_deref(),
            engine,
            &mut out,
        )?;
    }
    Ok(out)
}

/// Root operation types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootKind {
    Query,
    Mutation,
}

/// Adds the operations of one document: read by the fast reader when it is sure, else by
/// apollo-parser.
fn classify_document(
    profile: &Profile,
    rules: &GraphqlRules,
    method: &str,
    doc: &str,
    operation_name: Option<&str>,
    engine: Engine,
    out: &mut Collector,
) -> Result<(), ClassifyError> {
    if engine != Engine::Reference
        && let Some(ops) = fast::root_fields(doc, operation_name)
    {
        for (kind, fields) in ops {
            for field in fields {
                add_field(profile, rules, method, kind, field, out);
            }
        }
        return Ok(());
    }
    for (kind, fields) in reference_root_fields(doc, operation_name)? {
        for field in &fields {
            add_field(profile, rules, method, kind, field, out);
        }
    }
    Ok(())
}

/// The root fields of each operation of `doc`, in document order, read with apollo-parser: the
/// reference the fast reader is tested against.
fn reference_root_fields(
    doc: &str,
    operation_name: Option<&str>,
) -> Result<Vec<(RootKind, Vec<String>)>, ClassifyError> {
    let tree = Parser::new(doc)
        .recursion_limit(PARSER_RECURSION)
        .token_limit(PARSER_TOKENS)
        .parse();
    if let Some(e) = tree.errors().next() {
        return Err(ClassifyError::GraphqlSyntax {
            detail: bounded(e.message()),
        });
    }
    let document = tree.document();
    let mut operations = Vec::new();
    let mut fragments: HashMap<String, cst::FragmentDefinition> = HashMap::new();
    for def in document.definitions() {
        match def {
            cst::Definition::OperationDefinition(op) => operations.push(op),
            cst::Definition::FragmentDefinition(f) => {
                let name = f
                    .fragment_name()
                    .and_then(|n| n.name())
                    .and_then(|n| name_text(&n))
                    .ok_or_else(|| syntax("a fragment without a name"))?;
                if fragments.insert(name.clone(), f).is_some() {
                    return Err(syntax(&format!("fragment `{name}` is defined twice")));
                }
            }
            _ => return Err(syntax("a type system definition in an executable document")),
        }
    }
    if operations.is_empty() {
        return Err(syntax("the document has no operation"));
    }
    if let Some(wanted) = operation_name {
        let found = operations.iter().any(|op| {
            op.name()
                .and_then(|n| name_text(&n))
                .is_some_and(|n| n == wanted)
        });
        if !found {
            return Err(ClassifyError::UnknownOperationName {
                name: bounded(wanted),
            });
        }
    }
    let mut walker = Walker {
        fragments: &fragments,
        memo: HashMap::new(),
        work: 0,
    };
    let mut out = Vec::with_capacity(operations.len());
    for op in &operations {
        let kind = match op.operation_type() {
            None => RootKind::Query,
            Some(t) if t.subscription_token().is_some() => return Err(ClassifyError::Subscription),
            Some(t) if t.mutation_token().is_some() => RootKind::Mutation,
            Some(_) => RootKind::Query,
        };
        let set = op
            .selection_set()
            .ok_or_else(|| syntax("an operation without a selection set"))?;
        let mut fields = Fields::default();
        walker.root_fields(&set, 0, &mut fields)?;
        out.push((kind, fields.list));
    }
    Ok(out)
}

/// Maps one root field to its operation.
fn add_field(
    profile: &Profile,
    rules: &GraphqlRules,
    method: &str,
    kind: RootKind,
    field: &str,
    out: &mut Collector,
) {
    let index = match kind {
        RootKind::Query => rules.queries.get(field).copied().or(rules.query_fallback),
        // `__typename` is the one meta field allowed on any type: it reads.
        RootKind::Mutation if field == "__typename" => rules.query_fallback,
        RootKind::Mutation => rules
            .mutations
            .get(field)
            .copied()
            .or(rules.mutation_fallback),
    };
    match (index.and_then(|i| profile.op_at(i)), kind) {
        (Some(def), _) => out.add(&def.name, def.class),
        (None, RootKind::Mutation) => out.add(
            &blastwall_core::operation::OperationName::unknown(profile.name()),
            OperationClass::Destructive,
        ),
        (None, RootKind::Query) => out.unknown(profile, method),
    }
}

/// Follows fragments from the root of an operation, remembering each fragment's root fields.
struct Walker<'a> {
    fragments: &'a HashMap<String, cst::FragmentDefinition>,
    /// `None` while a fragment is being walked (to catch cycles).
    memo: HashMap<String, Option<Vec<String>>>,
    /// Field names merged from fragments so far (see [`MAX_MERGE_WORK`]).
    work: usize,
}

impl Walker<'_> {
    fn root_fields(
        &mut self,
        set: &cst::SelectionSet,
        depth: usize,
        out: &mut Fields<String>,
    ) -> Result<(), ClassifyError> {
        if depth > MAX_DEPTH {
            return Err(ClassifyError::TooComplex {
                detail: format!("fragments nest deeper than {MAX_DEPTH}"),
            });
        }
        for selection in set.selections() {
            match selection {
                cst::Selection::Field(f) => {
                    let name = f
                        .name()
                        .and_then(|n| name_text(&n))
                        .ok_or_else(|| syntax("a field without a name"))?;
                    out.push(name);
                }
                cst::Selection::InlineFragment(inline) => {
                    let inner = inline
                        .selection_set()
                        .ok_or_else(|| syntax("an inline fragment without a selection set"))?;
                    self.root_fields(&inner, depth + 1, out)?;
                }
                cst::Selection::FragmentSpread(spread) => {
                    let name = spread
                        .fragment_name()
                        .and_then(|n| n.name())
                        .and_then(|n| name_text(&n))
                        .ok_or_else(|| syntax("a fragment spread without a name"))?;
                    if out.spread_before(&name) {
                        continue;
                    }
                    for f in self.fragment_fields(&name, depth + 1)? {
                        out.push(f);
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts `n` more merged names against [`MAX_MERGE_WORK`].
    fn charge(&mut self, n: usize) -> Result<(), ClassifyError> {
        self.work = self.work.saturating_add(n);
        if self.work > MAX_MERGE_WORK {
            return Err(ClassifyError::TooComplex {
                detail: format!(
                    "its fragments spread into one another more than {MAX_MERGE_WORK} field names"
                ),
            });
        }
        Ok(())
    }

    fn fragment_fields(&mut self, name: &str, depth: usize) -> Result<Vec<String>, ClassifyError> {
        match self.memo.get(name).map(|m| m.as_ref().map(Vec::len)) {
            Some(Some(n)) => {
                self.charge(n)?;
                if let Some(Some(fields)) = self.memo.get(name) {
                    return Ok(fields.clone());
                }
            }
            Some(None) => return Err(syntax(&format!("fragment `{name}` spreads itself"))),
            None => {}
        }
        let Some(def) = self.fragments.get(name) else {
            return Err(syntax(&format!("fragment `{name}` is not defined")));
        };
        let set = def
            .selection_set()
            .ok_or_else(|| syntax("a fragment without a selection set"))?;
        self.memo.insert(name.to_owned(), None);
        let mut fields = Fields::default();
        self.root_fields(&set, depth, &mut fields)?;
        self.charge(fields.list.len())?;
        self.memo.insert(name.to_owned(), Some(fields.list.clone()));
        Ok(fields.list)
    }
}

/// Field lists longer than this also keep a set.
const SMALL_LIST: usize = 16;

/// Root field names in first-seen order, without duplicates. Long lists keep a set, and a
/// fragment spread a second time into the same list is not merged again (it adds nothing), so
/// that a large document costs linear time, not quadratic.
#[derive(Debug)]
struct Fields<T> {
    list: Vec<T>,
    /// Kept once the list is long.
    set: Option<HashSet<T>>,
    /// Fragments already merged.
    spread: Vec<T>,
}

impl<T> Default for Fields<T> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            set: None,
            spread: Vec::new(),
        }
    }
}

impl<T: Eq + Hash + Clone> Fields<T> {
    fn push(&mut self, field: T) {
        let fresh = match &mut self.set {
            Some(set) => set.insert(field.clone()),
            None => !self.list.contains(&field),
        };
        if fresh {
            self.list.push(field);
            if self.set.is_none() && self.list.len() > SMALL_LIST {
                self.set = Some(self.list.iter().cloned().collect());
            }
        }
    }

    /// Whether `fragment` was merged into this list before; remembers it if not.
    fn spread_before<Q>(&mut self, fragment: &Q) -> bool
    where
        T: std::borrow::Borrow<Q>,
        Q: Eq + ?Sized + ToOwned<Owned = T>,
    {
        if self.spread.iter().any(|f| f.borrow() == fragment) {
            return true;
        }
        self.spread.push(fragment.to_owned());
        false
    }
}

fn name_text(name: &cst::Name) -> Option<String> {
    name.ident_token()
        .map(|t| t.text().to_owned())
        .filter(|t| !t.is_empty())
}

fn syntax(detail: &str) -> ClassifyError {
    ClassifyError::GraphqlSyntax {
        detail: detail.to_owned(),
    }
}

/// `application/graphql` (parameters allowed): the body is the document itself.
fn is_graphql_document_type(value: &[u8]) -> bool {
    let essence = value.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/graphql")
}

/// Reads `query` and `operationName` from a URL query string. A repeated key, a raw `;` (some
/// servers split on it) or a bad percent escape is refused.
fn from_query_string(q: &str) -> Result<Option<GqlRequest>, ClassifyError> {
    let bad = |detail: &str| ClassifyError::GraphqlRequest {
        detail: detail.to_owned(),
    };
    if q.contains(';') {
        return Err(bad("a `;` in the query string is ambiguous"));
    }
    let mut request = GqlRequest::default();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = form_decode(k).ok_or_else(|| bad("a bad percent escape in the query string"))?;
        let slot = match key.as_str() {
            "query" => &mut request.query,
            "operationName" => &mut request.operation_name,
            k if PERSISTED_QUERY_KEYS.contains(&k) => {
                return Err(bad(
                    "the query string names a stored document, which cannot be classified",
                ));
            }
            "extensions" => {
                let value = form_decode(v)
                    .ok_or_else(|| bad("a bad percent escape in the query string"))?;
                if value.contains("persistedQuery") {
                    return Err(bad(
                        "`extensions.persistedQuery` names a stored document, which cannot be classified",
                    ));
                }
                continue;
            }
            _ => continue,
        };
        let value =
            form_decode(v).ok_or_else(|| bad("a bad percent escape in the query string"))?;
        if slot.replace(value).is_some() {
            return Err(bad(
                "a repeated `query` or `operationName` in the query string",
            ));
        }
    }
    if request.query.is_none() && request.operation_name.is_none() {
        return Ok(None);
    }
    Ok(Some(request))
}

/// Decodes `application/x-www-form-urlencoded` text strictly: `None` on a bad escape or
/// bytes that are not UTF-8.
fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let h = bytes.next().and_then(hex)?;
                let l = bytes.next().and_then(hex)?;
                out.push(h << 4 | l);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// A JSON body: one request or a batch.
enum Body {
    One(GqlRequest),
    Batch(Vec<GqlRequest>),
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Body;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a GraphQL request object or an array of them")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Body, A::Error> {
        RequestVisitor.visit_map(map).map(Body::One)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
        let mut out = Vec::new();
        while let Some(r) = seq.next_element::<GqlRequest>()? {
            if out.len() >= MAX_BATCH {
                return Err(de::Error::custom(format!(
                    "a batch holds more than {MAX_BATCH} requests"
                )));
            }
            out.push(r);
        }
        if out.is_empty() {
            return Err(de::Error::custom("an empty batch"));
        }
        Ok(Body::Batch(out))
    }
}

impl<'de> Deserialize<'de> for GqlRequest {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RequestVisitor)
    }
}

struct RequestVisitor;

/// Keys of a request object that name a stored (persisted) document instead of sending it:
/// Apollo's `extensions.persistedQuery` is checked apart, and these are the other spellings
/// servers read.
const PERSISTED_QUERY_KEYS: &[&str] = &["documentId", "id", "doc_id", "queryId"];

/// The `extensions` of a request, refused when it holds `persistedQuery`: a server that prefers
/// the stored document to `query` would run something other than what was classified.
struct Extensions;

impl<'de> Deserialize<'de> for Extensions {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ExtensionsVisitor)
    }
}

struct ExtensionsVisitor;

impl<'de> Visitor<'de> for ExtensionsVisitor {
    type Value = Extensions;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an `extensions` object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Extensions, A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "persistedQuery" {
                return Err(de::Error::custom(
                    "`extensions.persistedQuery` names a stored document, which cannot be classified",
                ));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(Extensions)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Extensions, E> {
        Ok(Extensions)
    }

    fn visit_none<E: de::Error>(self) -> Result<Extensions, E> {
        Ok(Extensions)
    }
}

impl<'de> Visitor<'de> for RequestVisitor {
    type Value = GqlRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a GraphQL request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GqlRequest, A::Error> {
        let mut request = GqlRequest::default();
        let mut seen_query = false;
        let mut seen_name = false;
        while let Some(key) = map.next_key::<String>()? {
            let (seen, slot) = match key.as_str() {
                "query" => (&mut seen_query, &mut request.query),
                "operationName" => (&mut seen_name, &mut request.operation_name),
                // A stored document named by id: a server may run it instead of `query`.
                k if PERSISTED_QUERY_KEYS.contains(&k) => {
                    return Err(de::Error::custom(format!(
                        "`{k}` names a stored document, which cannot be classified"
                    )));
                }
                k if k.eq_ignore_ascii_case("_method") => {
                    return Err(de::Error::custom("a `_method` key is not accepted"));
                }
                "extensions" => {
                    map.next_value::<Extensions>()?;
                    continue;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if std::mem::replace(seen, true) {
                // Parsers disagree on which of two equal keys wins: refuse.
                return Err(de::Error::custom(format!("`{key}` appears twice")));
            }
            *slot = map.next_value::<Option<String>>()?;
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings() {
        let r = from_query_string("query=%7B+me+%7D&operationName=A&x=1")
            .unwrap()
            .unwrap();
        assert_eq!(r.query.as_deref(), Some("{ me }"));
        assert_eq!(r.operation_name.as_deref(), Some("A"));
        assert!(from_query_string("x=1").unwrap().is_none());
        assert!(from_query_string("query=a&query=b").is_err());
        assert!(from_query_string("qu%65ry=a&query=b").is_err());
        assert!(from_query_string("query=%zz").is_err());
        assert!(from_query_string("x=1;query=a").is_err());
        // Stored documents: a server may run them instead of `query`.
        assert!(from_query_string("query=%7Bme%7D&documentId=abc").is_err());
        assert!(
            from_query_string(
                "query=%7Bme%7D&extensions=%7B%22persistedQuery%22%3A%7B%22sha256Hash%22%3A%22x%22%7D%7D"
            )
            .is_err()
        );
        assert!(from_query_string("query=%7Bme%7D&extensions=%7B%7D").is_ok());
    }

    #[test]
    fn json_bodies() {
        let one: Body = serde_json::from_str(r#"{"query":"{a}","variables":{"x":[1]}}"#).unwrap();
        assert!(matches!(one, Body::One(GqlRequest { query: Some(_), .. })));
        let batch: Body = serde_json::from_str(r#"[{"query":"{a}"},{"query":"{b}"}]"#).unwrap();
        assert!(matches!(batch, Body::Batch(v) if v.len() == 2));
        let ext: Body =
            serde_json::from_str(r#"{"query":"{a}","extensions":{"tracing":true}}"#).unwrap();
        assert!(matches!(ext, Body::One(_)));
        let null_ext: Body = serde_json::from_str(r#"{"query":"{a}","extensions":null}"#).unwrap();
        assert!(matches!(null_ext, Body::One(_)));
        for bad in [
            r#"{"query":"{a}","query":"{b}"}"#,
            r#"[]"#,
            r#""{a}""#,
            r#"{"query":1}"#,
            r#"{"query":"{a}"} x"#,
            r#"{"query":"{me{id}}","extensions":{"persistedQuery":{"version":1,"sha256Hash":"ab"}}}"#,
            r#"{"query":"{me{id}}","documentId":"d1"}"#,
            r#"{"query":"{me{id}}","id":"d1"}"#,
            r#"{"query":"{me{id}}","doc_id":"d1"}"#,
            r#"{"query":"{me{id}}","queryId":"d1"}"#,
            r#"{"query":"{me{id}}","_method":"DELETE"}"#,
            r#"[{"query":"{a}"},{"query":"{b}","extensions":{"persistedQuery":{}}}]"#,
        ] {
            assert!(serde_json::from_str::<Body>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_types() {
        assert!(is_graphql_document_type(b"application/graphql"));
        assert!(is_graphql_document_type(
            b"Application/GraphQL; charset=utf-8"
        ));
        assert!(!is_graphql_document_type(b"application/json"));
        assert!(!is_graphql_document_type(
            b"application/graphql-response+json"
        ));
    }
}

//! The TOML shape of a profile file, and its validation into a [`Profile`].

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use blastwall_core::operation::{OperationClass, OperationName};
use serde::Deserialize;
use toml::Spanned;

use crate::catalog::route::{Route, parse_route};
use crate::catalog::{
    CredentialTemplate, GraphqlRules, OperationDef, PathCase, Profile, ProfileKind, RestRules,
    Rules, Sample, SampleExpect,
};
use crate::error::PolicyError;
use crate::normalize::normalize_path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    profile: RawProfile,
    graphql: Option<RawGraphql>,
    #[serde(default)]
    operation: Vec<RawOperation>,
    #[serde(default)]
    sample: Vec<RawSample>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Spanned<String>,
    kind: Spanned<String>,
    summary: String,
    path_case: Option<Spanned<String>>,
    credential: RawCredential,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    header: Spanned<String>,
    template: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGraphql {
    endpoints: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    name: Spanned<String>,
    class: Spanned<String>,
    summary: Spanned<String>,
    #[serde(default)]
    mutations: Vec<Spanned<String>>,
    #[serde(default)]
    queries: Vec<Spanned<String>>,
    #[serde(default)]
    routes: Vec<Spanned<String>>,
    /// Granted only by name, never by a wildcard scope.
    #[serde(default)]
    explicit: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSample {
    name: Spanned<String>,
    method: Spanned<String>,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    ops: Vec<Spanned<String>>,
    class: Option<Spanned<String>>,
    #[serde(default)]
    refused: bool,
}

/// Reports problems against one file.
struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text
            .as_bytes()
            .get(..end)
            .map_or(1, |b| b.iter().filter(|&&c| c == b'\n').count() + 1)
    }

    fn invalid(
        &self,
        span: &Range<usize>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> PolicyError {
        PolicyError::CatalogInvalid {
            file: self.file.to_owned(),
            line: self.line(span),
            message: message.into(),
            hint: hint.into(),
        }
    }
}

/// Parses and validates one profile file.
pub(super) fn parse(file: &str, text: &str) -> Result<Profile, PolicyError> {
    let cx = Ctx { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| PolicyError::CatalogSyntax {
        file: file.to_owned(),
        line: e.span().map_or(1, |s| cx.line(&s)),
        message: e.message().trim().replace('\n', " "),
    })?;

    let name_span = raw.profile.name.span();
    let name = raw.profile.name.into_inner();
    if !is_ident(&name) {
        return Err(cx.invalid(
            &name_span,
            format!("bad profile name `{name}`"),
            "use letters, digits, `_` or `-`, e.g. `railway`",
        ));
    }
    let kind = match raw.profile.kind.get_ref().as_str() {
        "graphql" => ProfileKind::Graphql,
        "rest" => ProfileKind::Rest,
        other => {
            return Err(cx.invalid(
                &raw.profile.kind.span(),
                format!("unknown profile kind `{other}`"),
                "use `graphql` or `rest`",
            ));
        }
    };
    let path_case = match raw
        .profile
        .path_case
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("sensitive", _)) => PathCase::Sensitive,
        Some(("insensitive", _)) => PathCase::Insensitive,
        Some((other, span)) => {
            return Err(cx.invalid(
                &span,
                format!("unknown path_case `{other}`"),
                "use `sensitive` or `insensitive`",
            ));
        }
    };
    let credential = credential(&cx, &raw.profile.credential)?;

    let mut operations: Vec<OperationDef> = Vec::with_capacity(raw.operation.len() + 1);
    let mut seen_ops: HashMap<OperationName, ()> = HashMap::new();
    let mut graphql = GraphqlRules::default();
    let mut rest = RestRules::default();
    let mut route_shapes: HashMap<(String, String), String> = HashMap::new();

    match (&kind, &raw.graphql) {
        (ProfileKind::Graphql, None) => {
            return Err(cx.invalid(
                &name_span,
                "a graphql profile needs a `[graphql]` table",
                "add `[graphql]` with `endpoints = [\"/graphql\"]`",
            ));
        }
        (ProfileKind::Rest, Some(g)) => {
            return Err(cx.invalid(
                &g.endpoints.span(),
                "a rest profile has no `[graphql]` table",
                "remove it, or set `kind = \"graphql\"`",
            ));
        }
        (ProfileKind::Graphql, Some(g)) => {
            if g.endpoints.get_ref().is_empty() {
                return Err(cx.invalid(
                    &g.endpoints.span(),
                    "`endpoints` is empty",
                    "list the paths that accept GraphQL, e.g. `[\"/graphql\"]`",
                ));
            }
            for ep in g.endpoints.get_ref() {
                let normalized = normalize_path(ep.get_ref(), path_case)
                    .ok()
                    .filter(|n| n.path == *ep.get_ref() || path_case == PathCase::Insensitive);
                match normalized {
                    Some(n) if n.query.is_none() => graphql.endpoints.push(n.path),
                    _ => {
                        return Err(cx.invalid(
                            &ep.span(),
                            format!("endpoint `{}` is not a normalized path", ep.get_ref()),
                            "write it as it is requested, e.g. `/graphql/v2`, without a query, `.`, `..` or `%`",
                        ));
                    }
                }
            }
        }
        (ProfileKind::Rest, None) => {}
    }

    for op in &raw.operation {
        let index = operations.len();
        let op_name = OperationName::new(op.name.get_ref()).map_err(|e| {
            cx.invalid(
                &op.name.span(),
                format!("bad operation name `{}`", op.name.get_ref()),
                e.hint,
            )
        })?;
        if op_name.profile() != name || op_name.as_str().ends_with(":unknown") {
            return Err(cx.invalid(
                &op.name.span(),
                format!("operation `{op_name}` must be `{name}:<resource>.<verb>`"),
                format!("name it after this profile, e.g. `{name}:thing.delete`; `{name}:unknown` is reserved"),
            ));
        }
        if seen_ops.insert(op_name.clone(), ()).is_some() {
            return Err(cx.invalid(
                &op.name.span(),
                format!("operation `{op_name}` is defined twice"),
                "merge the two, or give one another name",
            ));
        }
        let class: OperationClass = op.class.get_ref().parse().map_err(|_| {
            cx.invalid(
                &op.class.span(),
                format!("unknown class `{}`", op.class.get_ref()),
                "use `read`, `write` or `destructive`",
            )
        })?;
        if op.summary.get_ref().trim().is_empty() || op.summary.get_ref().contains('\n') {
            return Err(cx.invalid(
                &op.summary.span(),
                format!("operation `{op_name}` needs a one-line summary"),
                "say in a few words what it does, e.g. `delete a volume`",
            ));
        }
        let mut requests = Vec::new();
        match kind {
            ProfileKind::Graphql => {
                if let Some(r) = op.routes.first() {
                    return Err(cx.invalid(
                        &r.span(),
                        "`routes` belong to rest profiles",
                        "use `mutations` or `queries` in a graphql profile",
                    ));
                }
                for (fields, map, fallback, what) in [
                    (
                        &op.mutations,
                        &mut graphql.mutations,
                        &mut graphql.mutation_fallback,
                        "mutation",
                    ),
                    (
                        &op.queries,
                        &mut graphql.queries,
                        &mut graphql.query_fallback,
                        "query",
                    ),
                ] {
                    for field in fields {
                        let f = field.get_ref();
                        if f == "*" {
                            if fallback.replace(index).is_some() {
                                return Err(cx.invalid(
                                    &field.span(),
                                    format!("a second `{what}` fallback `*`"),
                                    format!(
                                        "only one operation may take every unlisted {what} field"
                                    ),
                                ));
                            }
                            if what == "query" && class != OperationClass::Read {
                                return Err(cx.invalid(
                                    &op.class.span(),
                                    "the query fallback must be a read",
                                    "set `class = \"read\"`",
                                ));
                            }
                        } else if !is_graphql_name(f) {
                            return Err(cx.invalid(
                                &field.span(),
                                format!("`{f}` is not a GraphQL field name"),
                                "write the root field as in the schema, e.g. `volumeDelete`",
                            ));
                        } else if map.insert(f.clone(), index).is_some() {
                            return Err(cx.invalid(
                                &field.span(),
                                format!("{what} field `{f}` is mapped twice"),
                                "map each root field to one operation",
                            ));
                        }
                        requests.push(format!("{what} {f}"));
                    }
                }
            }
            ProfileKind::Rest => {
                if let Some(f) = op.mutations.first().or(op.queries.first()) {
                    return Err(cx.invalid(
                        &f.span(),
                        "`mutations` and `queries` belong to graphql profiles",
                        "use `routes` in a rest profile",
                    ));
                }
                for r in &op.routes {
                    let (method, template) = parse_route(r.get_ref(), path_case)
                        .map_err(|e| cx.invalid(&r.span(), e, "see docs/catalog.md, routes"))?;
                    let key = (method.clone(), template.shape());
                    if let Some(prev) = route_shapes.insert(key, r.get_ref().clone()) {
                        return Err(cx.invalid(
                            &r.span(),
                            format!(
                                "route `{}` matches the same requests as `{prev}`",
                                r.get_ref()
                            ),
                            "keep one of them",
                        ));
                    }
                    rest.routes.push(Route {
                        method,
                        template,
                        op: index,
                    });
                    requests.push(r.get_ref().clone());
                }
            }
        }
        if requests.is_empty() {
            return Err(cx.invalid(
                &op.name.span(),
                format!("operation `{op_name}` matches no request"),
                match kind {
                    ProfileKind::Graphql => "add `mutations = [...]` or `queries = [...]`",
                    ProfileKind::Rest => "add `routes = [\"METHOD /path\"]`",
                },
            ));
        }
        operations.push(OperationDef {
            name: op_name,
            class,
            summary: op.summary.get_ref().trim().to_owned(),
            requests,
            explicit: op.explicit,
        });
    }
    let unknown = OperationName::unknown(&name);
    operations.push(OperationDef {
        name: unknown.clone(),
        class: OperationClass::Destructive,
        summary: format!("a request the `{name}` profile does not recognise"),
        requests: Vec::new(),
        explicit: false,
    });

    let mut samples = Vec::with_capacity(raw.sample.len());
    for s in raw.sample {
        samples.push(sample(&cx, s, &operations)?);
    }

    Ok(Profile {
        name,
        name_line: cx.line(&name_span),
        kind,
        summary: raw.profile.summary,
        source: file.to_owned(),
        path_case,
        credential,
        operations,
        rules: match kind {
            ProfileKind::Graphql => Rules::Graphql(graphql),
            ProfileKind::Rest => Rules::Rest(rest),
        },
        samples,
        memo: Default::default(),
    })
}

fn credential(cx: &Ctx<'_>, raw: &RawCredential) -> Result<CredentialTemplate, PolicyError> {
    let header = raw.header.get_ref();
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    {
        return Err(cx.invalid(
            &raw.header.span(),
            format!("`{header}` is not an HTTP header name"),
            "e.g. `Authorization`",
        ));
    }
    let template = raw.template.get_ref();
    let mut parts = template.split("{credential}");
    let (Some(prefix), Some(suffix), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(cx.invalid(
            &raw.template.span(),
            format!("credential template `{template}` must hold `{{credential}}` exactly once"),
            "e.g. `Bearer {credential}`",
        ));
    };
    if template.bytes().any(|b| b.is_ascii_control()) {
        return Err(cx.invalid(
            &raw.template.span(),
            "the credential template holds a control character",
            "write a plain header value, e.g. `Bearer {credential}`",
        ));
    }
    Ok(CredentialTemplate {
        header: header.clone(),
        prefix: prefix.to_owned(),
        suffix: suffix.to_owned(),
    })
}

fn sample(cx: &Ctx<'_>, s: RawSample, ops: &[OperationDef]) -> Result<Sample, PolicyError> {
    let method = s.method.get_ref();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(cx.invalid(
            &s.method.span(),
            format!("bad method `{method}`"),
            "e.g. `POST`",
        ));
    }
    let expect = if s.refused {
        if let Some(o) = s.ops.first() {
            return Err(cx.invalid(
                &o.span(),
                "a refused sample has no `ops`",
                "remove `ops` and `class`, or `refused`",
            ));
        }
        SampleExpect::Refused
    } else {
        let Some(class_text) = s.class.as_ref() else {
            return Err(cx.invalid(
                &s.name.span(),
                format!(
                    "sample `{}` needs `class` (or `refused = true`)",
                    s.name.get_ref()
                ),
                "add `class = \"read\"`, `\"write\"` or `\"destructive\"`",
            ));
        };
        let class: OperationClass = class_text.get_ref().parse().map_err(|_| {
            cx.invalid(
                &class_text.span(),
                format!("unknown class `{}`", class_text.get_ref()),
                "use `read`, `write` or `destructive`",
            )
        })?;
        if s.ops.is_empty() {
            return Err(cx.invalid(
                &s.name.span(),
                format!("sample `{}` needs `ops`", s.name.get_ref()),
                "list the operations it must classify as",
            ));
        }
        let mut names = Vec::with_capacity(s.ops.len());
        for o in &s.ops {
            let name = OperationName::new(o.get_ref())
                .ok()
                .filter(|n| ops.iter().any(|d| &d.name == n))
                .ok_or_else(|| {
                    cx.invalid(
                        &o.span(),
                        format!(
                            "sample names `{}`, which this profile does not define",
                            o.get_ref()
                        ),
                        "name an operation of this profile",
                    )
                })?;
            names.push(name);
        }
        SampleExpect::Classified { ops: names, class }
    };
    Ok(Sample {
        name: s.name.into_inner(),
        method: s.method.into_inner(),
        path: s.path,
        headers: s.headers.into_iter().collect(),
        body: s.body,
        expect,
    })
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `[_A-Za-z][_0-9A-Za-z]*`, as the GraphQL spec defines a name.
fn is_graphql_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[profile]
name = "api"
kind = "rest"
summary = "x"
[profile.credential]
header = "Authorization"
template = "Bearer {credential}"
[[operation]]
name = "api:thing.delete"
class = "destructive"
summary = "delete a thing"
routes = ["DELETE /things/{id}"]
"#;

    fn err(text: &str) -> String {
        parse("x.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_profile() {
        let p = parse("x.toml", MINIMAL).unwrap();
        assert_eq!(p.name(), "api");
        assert_eq!(p.operations().count(), 2);
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = err(&MINIMAL.replace("\"destructive\"", "\"destructve\""));
        assert!(
            e.starts_with("catalog file `x.toml` line 11: unknown class `destructve`"),
            "{e}"
        );
        let e = err(&MINIMAL.replace("api:thing.delete", "other:thing.delete"));
        assert!(e.contains("line 10"), "{e}");
        let e = err(&MINIMAL.replace("routes", "rotes"));
        assert!(e.contains("line 13") && e.contains("rotes"), "{e}");
        let e = err(&MINIMAL.replace("{credential}", "{cred}"));
        assert!(e.contains("line 8"), "{e}");
        let e = err(&MINIMAL.replace("DELETE /things/{id}", "DELETE things"));
        assert!(e.contains("line 13"), "{e}");
        let e = err("[profile\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn duplicate_routes_are_refused() {
        let e = err(&MINIMAL.replace(
            "routes = [\"DELETE /things/{id}\"]",
            "routes = [\"DELETE /things/{id}\", \"DELETE /things/{x}\"]",
        ));
        assert!(e.contains("matches the same requests"), "{e}");
    }

    #[test]
    fn kind_mismatch() {
        let e = err(&MINIMAL.replace("routes =", "mutations ="));
        assert!(e.contains("belong to graphql"), "{e}");
        let e = err(&MINIMAL.replace("kind = \"rest\"", "kind = \"graphql\""));
        assert!(e.contains("[graphql]"), "{e}");
    }

    #[test]
    fn graphql_names() {
        assert!(is_graphql_name("volumeDelete"));
        assert!(is_graphql_name("_x1"));
        assert!(!is_graphql_name("1x"));
        assert!(!is_graphql_name("a-b"));
        assert!(!is_graphql_name(""));
    }
}

//! A lexer-level reader of GraphQL executable documents: the root fields of every operation,
//! read in one pass over the text without building a syntax tree.
//!
//! It recognises the whole executable grammar ([October 2021 spec, §2] and its lexical rules in
//! appendix B) strictly, and answers only when it is sure. Anything else makes it answer `None`
//! and the caller asks apollo-parser, whose answer (often a refusal) stands:
//!
//! - a lexical or syntax error, or anything the grammar allows but this reader does not bother
//!   with (`\u{…}` escapes, control characters in strings or comments, non-ASCII outside strings
//!   and comments, a byte order mark);
//! - a type system definition, a description, a subscription;
//! - an undefined, duplicated or cyclic fragment at the root, an `operationName` the document
//!   lacks;
//! - a document near apollo-parser's limits (nesting, tokens) or the classifier's (fragment
//!   depth).
//!
//! So it is never more permissive than the parser: a document the parser refuses is still
//! refused. When it does answer, it gives what the parser-based walker gives, in the same order
//! (the same traversal, the same de-duplication); the differential tests below and in
//! `tests/it/props.rs`, and the `graphql_classify` fuzz target, check both.
//!
//! [October 2021 spec, §2]: https://spec.graphql.org/October2021/#sec-Language

use std::collections::HashMap;

use super::{Fields, MAX_DEPTH, MAX_MERGE_WORK, PARSER_RECURSION, PARSER_TOKENS, RootKind};

/// Bracket nesting past which the parser decides. Apollo-parser counts one level per selection
/// set, list value, object field and list type, so its count never exceeds ours.
const MAX_NESTING: usize = PARSER_RECURSION / 2;
/// Fragment depth past which the walker of the parser's tree decides (it refuses past
/// [`MAX_DEPTH`]); ours follows the same path, so this is only a margin.
const MAX_FRAGMENT_DEPTH: usize = MAX_DEPTH / 2;
/// Longest document read here: every token is at least a byte, so a document of this length
/// cannot reach the parser's token limit.
const MAX_LEN: usize = PARSER_TOKENS / 2;

/// The root fields of each operation of `doc`, in document order, each list without
/// duplicates; `None` when unsure (see the module's documentation).
pub(super) fn root_fields<'a>(
    doc: &'a str,
    operation_name: Option<&str>,
) -> Option<Vec<(RootKind, Vec<&'a str>)>> {
    if doc.len() > MAX_LEN {
        return None;
    }
    let mut reader = Reader::new(doc)?;
    let document = reader.document()?;
    if let Some(wanted) = operation_name
        && !document.operations.iter().any(|op| op.name == Some(wanted))
    {
        return None;
    }
    let mut fragments = HashMap::with_capacity(document.fragments.len());
    for (name, items) in &document.fragments {
        if fragments.insert(*name, items.as_slice()).is_some() {
            return None;
        }
    }
    let mut walker = Walker {
        fragments: &fragments,
        memo: HashMap::new(),
        work: 0,
    };
    let mut out = Vec::with_capacity(document.operations.len());
    for op in &document.operations {
        let mut fields = Fields::default();
        walker.root_fields(&op.root, 0, &mut fields)?;
        out.push((op.kind, fields.list));
    }
    Some(out)
}

/// A token. Strings and numbers carry no text: only names matter to classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// One of `! $ & ( ) : = @ [ ] { | }`.
    Punct(u8),
    /// `...`
    Spread,
    Name(&'a str),
    /// An integer, a float or a string (block or not): a value, nothing more.
    Scalar,
    Eof,
}

/// A selection at the root of an operation or fragment.
#[derive(Debug)]
enum Item<'a> {
    /// A field's name (not its alias).
    Field(&'a str),
    Spread(&'a str),
    Inline(Vec<Item<'a>>),
}

#[derive(Debug)]
struct Operation<'a> {
    kind: RootKind,
    name: Option<&'a str>,
    root: Vec<Item<'a>>,
}

#[derive(Debug, Default)]
struct Document<'a> {
    operations: Vec<Operation<'a>>,
    fragments: Vec<(&'a str, Vec<Item<'a>>)>,
}

/// Splits text into tokens, skipping ignored ones (spaces, tabs, line ends, commas, comments).
struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    /// Whether a comma came before the last token. Apollo-parser's two-token lookahead counts
    /// commas as tokens (so it refuses `{ a,: b }` and `{ ...,F }`), so we must know.
    comma: bool,
}

impl<'a> Lexer<'a> {
    fn byte(&self, at: usize) -> Option<u8> {
        self.src.as_bytes().get(at).copied()
    }

    /// The next token; `None` on a lexical error or anything this reader leaves to the parser.
    fn next(&mut self) -> Option<Tok<'a>> {
        self.skip_ignored()?;
        let start = self.pos;
        let Some(c) = self.byte(start) else {
            return Some(Tok::Eof);
        };
        self.pos += 1;
        match c {
            b'!' | b'$' | b'&' | b'(' | b')' | b':' | b'=' | b'@' | b'[' | b']' | b'{' | b'|'
            | b'}' => Some(Tok::Punct(c)),
            b'.' => {
                if self.byte(self.pos) == Some(b'.') && self.byte(self.pos + 1) == Some(b'.') {
                    self.pos += 2;
                    Some(Tok::Spread)
                } else {
                    None
                }
            }
            b'_' | b'A'..=b'Z' | b'a'..=b'z' => {
                self.pos += self.run(is_name_continue);
                self.src.get(start..self.pos).map(Tok::Name)
            }
            b'-' | b'0'..=b'9' => {
                self.pos = start;
                self.number()?;
                Some(Tok::Scalar)
            }
            b'"' => {
                if self.byte(self.pos) == Some(b'"') && self.byte(self.pos + 1) == Some(b'"') {
                    self.pos += 2;
                    self.block_string()?;
                } else {
                    self.string()?;
                }
                Some(Tok::Scalar)
            }
            _ => None,
        }
    }

    /// How many bytes from the current position satisfy `keep`.
    fn run(&self, keep: impl Fn(u8) -> bool) -> usize {
        let rest = self.src.as_bytes().get(self.pos..).unwrap_or_default();
        rest.iter().position(|&b| !keep(b)).unwrap_or(rest.len())
    }

    fn skip_ignored(&mut self) -> Option<()> {
        self.comma = false;
        loop {
            match self.byte(self.pos) {
                Some(b' ' | b'\t' | b'\n' | b'\r') => {
                    self.pos += 1;
                    self.pos += self.run(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
                }
                Some(b',') => {
                    self.comma = true;
                    self.pos += 1;
                }
                Some(b'#') => {
                    self.pos += 1;
                    loop {
                        match self.byte(self.pos) {
                            None | Some(b'\n' | b'\r') => break,
                            Some(b'\t') => self.pos += 1,
                            Some(b) if b < 0x20 || b == 0x7f => return None,
                            Some(_) => self.pos += 1,
                        }
                    }
                }
                _ => return Some(()),
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, not followed by `.` or a name start.
    fn number(&mut self) -> Option<()> {
        if self.byte(self.pos) == Some(b'-') {
            self.pos += 1;
        }
        match self.byte(self.pos)? {
            b'0' => {
                self.pos += 1;
                if self.byte(self.pos).is_some_and(|b| b.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.byte(self.pos) == Some(b'.') {
            self.pos += 1;
            self.at_least_one_digit()?;
        }
        if matches!(self.byte(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.byte(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.at_least_one_digit()?;
        }
        match self.byte(self.pos) {
            Some(b) if b == b'.' || b == b'_' || b.is_ascii_alphabetic() => None,
            _ => Some(()),
        }
    }

    fn digits(&mut self) {
        while self.byte(self.pos).is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn at_least_one_digit(&mut self) -> Option<()> {
        let start = self.pos;
        self.digits();
        (self.pos > start).then_some(())
    }

    /// The rest of a `"…"` string, after its opening quote.
    fn string(&mut self) -> Option<()> {
        loop {
            self.pos += self.run(|b| b != b'"' && b != b'\\' && b >= 0x20 && b != 0x7f);
            match self.byte(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                b'\\' => {
                    self.pos += 1;
                    match self.byte(self.pos)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        b'u' => {
                            // Exactly four hex digits, not a surrogate: `\u{…}` and
                            // surrogate pairs are left to the parser.
                            let hex = self.src.get(self.pos + 1..self.pos + 5)?;
                            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                                return None;
                            }
                            let code = u32::from_str_radix(hex, 16).ok()?;
                            if (0xD800..=0xDFFF).contains(&code) {
                                return None;
                            }
                            self.pos += 5;
                        }
                        _ => return None,
                    }
                }
                b'\t' => self.pos += 1,
                b if b < 0x20 || b == 0x7f => return None,
                _ => self.pos += 1,
            }
        }
    }

    /// The rest of a `"""…"""` block string, after its opening quotes. `\"""` is the only
    /// escape; a backslash is otherwise an ordinary character.
    fn block_string(&mut self) -> Option<()> {
        let rest = |l: &Self, at: usize| l.src.as_bytes().get(at..at + 3) == Some(b"\"\"\"");
        loop {
            self.pos += self.run(|b| b != b'"' && b != b'\\' && b >= 0x20 && b != 0x7f);
            match self.byte(self.pos)? {
                b'"' if rest(self, self.pos) => {
                    self.pos += 3;
                    return Some(());
                }
                b'\\' if rest(self, self.pos + 1) => self.pos += 4,
                b'\t' | b'\n' | b'\r' => self.pos += 1,
                b if b < 0x20 || b == 0x7f => return None,
                _ => self.pos += 1,
            }
        }
    }
}

fn is_name_continue(b: u8) -> bool {
    NAME_CONTINUE.get(usize::from(b)).copied().unwrap_or(false)
}

/// `[_0-9A-Za-z]`, as a table.
static NAME_CONTINUE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c == b'_' || c.is_ascii_alphanumeric();
        b += 1;
    }
    table
};

/// A recursive-descent recogniser of the executable grammar over [`Lexer`]'s tokens. Every
/// method returns `None` when unsure; `tok` is the current (not yet consumed) token.
struct Reader<'a> {
    lexer: Lexer<'a>,
    tok: Tok<'a>,
    /// A comma came before `tok`.
    comma: bool,
    nesting: usize,
}

impl<'a> Reader<'a> {
    fn new(src: &'a str) -> Option<Self> {
        let mut lexer = Lexer {
            src,
            pos: 0,
            comma: false,
        };
        let tok = lexer.next()?;
        Some(Self {
            comma: lexer.comma,
            lexer,
            tok,
            nesting: 0,
        })
    }

    fn bump(&mut self) -> Option<()> {
        self.tok = self.lexer.next()?;
        self.comma = self.lexer.comma;
        Some(())
    }

    fn expect(&mut self, punct: u8) -> Option<()> {
        if self.tok == Tok::Punct(punct) {
            self.bump()
        } else {
            None
        }
    }

    fn name(&mut self) -> Option<&'a str> {
        match self.tok {
            Tok::Name(n) => {
                self.bump()?;
                Some(n)
            }
            _ => None,
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.nesting += 1;
        (self.nesting <= MAX_NESTING).then_some(())
    }

    fn leave(&mut self) {
        self.nesting = self.nesting.saturating_sub(1);
    }

    /// `Definition+`, executable definitions only.
    fn document(&mut self) -> Option<Document<'a>> {
        let mut doc = Document::default();
        loop {
            match self.tok {
                Tok::Eof => break,
                Tok::Punct(b'{') => {
                    let root = self.selection_set(true)?;
                    doc.operations.push(Operation {
                        kind: RootKind::Query,
                        name: None,
                        root,
                    });
                }
                Tok::Name(keyword @ ("query" | "mutation")) => {
                    self.bump()?;
                    let kind = if keyword == "query" {
                        RootKind::Query
                    } else {
                        RootKind::Mutation
                    };
                    let name = match self.tok {
                        Tok::Name(n) => {
                            self.bump()?;
                            Some(n)
                        }
                        _ => None,
                    };
                    if self.tok == Tok::Punct(b'(') {
                        self.variable_definitions()?;
                    }
                    self.directives(false)?;
                    let root = self.selection_set(true)?;
                    doc.operations.push(Operation { kind, name, root });
                }
                Tok::Name("fragment") => {
                    self.bump()?;
                    let name = self.name()?;
                    if name == "on" || self.tok != Tok::Name("on") {
                        return None;
                    }
                    self.bump()?;
                    self.name()?;
                    self.directives(false)?;
                    let root = self.selection_set(true)?;
                    doc.fragments.push((name, root));
                }
                // Subscriptions, type system definitions, descriptions, anything else.
                _ => return None,
            }
        }
        (!doc.operations.is_empty()).then_some(doc)
    }

    /// `{ Selection+ }`; the selections are kept only when `keep` (at the root).
    fn selection_set(&mut self, keep: bool) -> Option<Vec<Item<'a>>> {
        self.expect(b'{')?;
        self.enter()?;
        let mut items = Vec::new();
        let mut any = false;
        while self.tok != Tok::Punct(b'}') {
            any = true;
            match self.tok {
                Tok::Spread => {
                    self.bump()?;
                    if self.comma {
                        // Apollo-parser refuses `...,F` (see `Lexer::comma`).
                        return None;
                    }
                    match self.tok {
                        Tok::Name("on") => {
                            self.bump()?;
                            self.name()?;
                            self.inline_fragment(keep, &mut items)?;
                        }
                        Tok::Name(fragment) => {
                            self.bump()?;
                            self.directives(false)?;
                            if keep {
                                items.push(Item::Spread(fragment));
                            }
                        }
                        Tok::Punct(b'@' | b'{') => self.inline_fragment(keep, &mut items)?,
                        _ => return None,
                    }
                }
                Tok::Name(first) => {
                    self.bump()?;
                    let field = if self.tok == Tok::Punct(b':') {
                        if self.comma {
                            // Apollo-parser refuses `a,: b` (see `Lexer::comma`).
                            return None;
                        }
                        self.bump()?;
                        self.name()?
                    } else {
                        first
                    };
                    if self.tok == Tok::Punct(b'(') {
                        self.arguments(false)?;
                    }
                    self.directives(false)?;
                    if self.tok == Tok::Punct(b'{') {
                        self.selection_set(false)?;
                    }
                    if keep {
                        items.push(Item::Field(field));
                    }
                }
                _ => return None,
            }
        }
        self.bump()?;
        self.leave();
        any.then_some(items)
    }

    /// An inline fragment after `...` and its type condition, if any.
    fn inline_fragment(&mut self, keep: bool, items: &mut Vec<Item<'a>>) -> Option<()> {
        self.directives(false)?;
        let inner = self.selection_set(keep)?;
        if keep {
            items.push(Item::Inline(inner));
        }
        Some(())
    }

    /// `( Argument+ )`
    fn arguments(&mut self, constant: bool) -> Option<()> {
        self.expect(b'(')?;
        if self.tok == Tok::Punct(b')') {
            return None;
        }
        while self.tok != Tok::Punct(b')') {
            self.name()?;
            self.expect(b':')?;
            self.value(constant)?;
        }
        self.bump()
    }

    /// `Directive*`
    fn directives(&mut self, constant: bool) -> Option<()> {
        while self.tok == Tok::Punct(b'@') {
            self.bump()?;
            self.name()?;
            if self.tok == Tok::Punct(b'(') {
                self.arguments(constant)?;
            }
        }
        Some(())
    }

    /// `( VariableDefinition+ )`
    fn variable_definitions(&mut self) -> Option<()> {
        self.expect(b'(')?;
        if self.tok != Tok::Punct(b'$') {
            return None;
        }
        while self.tok == Tok::Punct(b'$') {
            self.bump()?;
            self.name()?;
            self.expect(b':')?;
            self.ty()?;
            if self.tok == Tok::Punct(b'=') {
                self.bump()?;
                self.value(true)?;
            }
            self.directives(true)?;
        }
        self.expect(b')')
    }

    /// `Name`, `[Type]`, either followed by `!`.
    fn ty(&mut self) -> Option<()> {
        match self.tok {
            Tok::Name(_) => self.bump()?,
            Tok::Punct(b'[') => {
                self.bump()?;
                self.enter()?;
                self.ty()?;
                self.expect(b']')?;
                self.leave();
            }
            _ => return None,
        }
        if self.tok == Tok::Punct(b'!') {
            self.bump()?;
        }
        Some(())
    }

    /// A value; variables only when not `constant`.
    fn value(&mut self, constant: bool) -> Option<()> {
        match self.tok {
            Tok::Punct(b'$') if !constant => {
                self.bump()?;
                self.name()?;
            }
            Tok::Scalar | Tok::Name(_) => self.bump()?,
            Tok::Punct(b'[') => {
                self.bump()?;
                self.enter()?;
                while self.tok != Tok::Punct(b']') {
                    self.value(constant)?;
                }
                self.bump()?;
                self.leave();
            }
            Tok::Punct(b'{') => {
                self.bump()?;
                self.enter()?;
                while self.tok != Tok::Punct(b'}') {
                    self.name()?;
                    self.expect(b':')?;
                    self.value(constant)?;
                }
                self.bump()?;
                self.leave();
            }
            _ => return None,
        }
        Some(())
    }
}

/// Follows fragments from the root of an operation as the parser-based walker does, in the same
/// order and with the same memo, so that depths and field order agree.
struct Walker<'d, 'a> {
    fragments: &'d HashMap<&'a str, &'d [Item<'a>]>,
    /// `None` while a fragment is being walked (a cycle).
    memo: HashMap<&'a str, Option<Vec<&'a str>>>,
    /// Field names merged from fragments so far: past [`MAX_MERGE_WORK`] the document goes to
    /// the parser-based walker, which refuses it.
    work: usize,
}

impl<'a> Walker<'_, 'a> {
    fn root_fields(
        &mut self,
        items: &[Item<'a>],
        depth: usize,
        out: &mut Fields<&'a str>,
    ) -> Option<()> {
        if depth > MAX_FRAGMENT_DEPTH {
            return None;
        }
        for item in items {
            match item {
                Item::Field(name) => out.push(name),
                Item::Inline(inner) => self.root_fields(inner, depth + 1, out)?,
                Item::Spread(name) => {
                    if out.spread_before(name) {
                        continue;
                    }
                    for f in self.fragment_fields(name, depth + 1)? {
                        out.push(f);
                    }
                }
            }
        }
        Some(())
    }

    fn charge(&mut self, n: usize) -> Option<()> {
        self.work = self.work.saturating_add(n);
        (self.work <= MAX_MERGE_WORK).then_some(())
    }

    fn fragment_fields(&mut self, name: &'a str, depth: usize) -> Option<Vec<&'a str>> {
        match self.memo.get(name).map(|m| m.as_ref().map(Vec::len)) {
            Some(Some(n)) => {
                self.charge(n)?;
                return self.memo.get(name).cloned().flatten();
            }
            Some(None) => return None,
            None => {}
        }
        let items = self.fragments.get(name)?;
        self.memo.insert(name, None);
        let mut fields = Fields::default();
        self.root_fields(items, depth, &mut fields)?;
        self.charge(fields.list.len())?;
        self.memo.insert(name, Some(fields.list.clone()));
        Some(fields.list)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::classify::graphql::reference_root_fields;

    /// Root fields per operation, as owned strings.
    type Ops = Vec<(RootKind, Vec<String>)>;

    /// The fast reader's answer next to the parser's.
    fn both(doc: &str, name: Option<&str>) -> (Option<Ops>, Result<Ops, crate::ClassifyError>) {
        let fast = root_fields(doc, name).map(|ops| {
            ops.into_iter()
                .map(|(k, fs)| (k, fs.into_iter().map(str::to_owned).collect()))
                .collect()
        });
        (fast, reference_root_fields(doc, name))
    }

    /// The fast reader answers, and agrees with the parser.
    #[track_caller]
    fn agrees(doc: &str, name: Option<&str>) -> Ops {
        let (fast, reference) = both(doc, name);
        let fast = fast.unwrap_or_else(|| panic!("the fast reader gave up on {doc:?}"));
        assert_eq!(Ok(fast.clone()), reference, "{doc:?}");
        fast
    }

    /// The fast reader defers (and so the parser decides).
    #[track_caller]
    fn defers(doc: &str) {
        assert_eq!(both(doc, None).0, None, "{doc:?}");
    }

    #[test]
    fn reads_what_the_parser_reads() {
        let ops = agrees(
            r#"
            # a comment, with "quotes" and é
            mutation Op($id: ID! = "x", $l: [[Int!]]! = [[1, 2], [-3]] @c(a: 1)) @d(if: $id) {
              a: volumeDelete(volumeId: $id, o: {k: [1.5e3, -0.0, "s\"\u00e9", """b\"""c""", E, null, true]}) { id ...N }
              ... on Mutation @skip(if: true) { serviceDelete(id: 1) ... { x: projectDelete } }
              ... @include(if: false) { volumeDelete }
              ...F @d
              __typename
            }
            fragment F on Mutation { environmentDelete ...G }
            fragment G on Mutation { volumeDelete y: customDomainCreate }
            fragment N on Volume { nested { deep } }
            query { me { id } on: project(id: 1) { fragment } }
            { query mutation fragment on }
            "#,
            None,
        );
        assert_eq!(ops.len(), 3);
        assert_eq!(
            ops[0].1,
            [
                "volumeDelete",
                "serviceDelete",
                "projectDelete",
                "environmentDelete",
                "customDomainCreate",
                "__typename"
            ]
        );
        assert_eq!(ops[2].1, ["query", "mutation", "fragment", "on"]);
        agrees("query A { a } mutation B { b }", Some("B"));
    }

    #[test]
    fn defers_what_it_is_unsure_of() {
        for doc in [
            "",
            "# nothing",
            "{}",
            "{ a(): b }",
            "query ($v: Int = $w) { a }",
            "query () { a }",
            "subscription { a }",
            "type Query { a: Int }",
            "\"description\" query { a }",
            "{ a } fragment F on Q { b } fragment F on Q { c }",
            "{ ...F }",
            "{ ...F } fragment F on Q { ...F }",
            "fragment on on Q { a } { ...on }",
            "{ a(x: 01) }",
            "{ a(x: 1.) }",
            "{ a(x: 1e) }",
            "{ a(x: 1x) }",
            "{ a(x: 1.5.1) }",
            "{ a(x: \"\\u{1F600}\") }",
            "{ a(x: \"\\ud83d\\ude00\") }",
            "{ a(x: \"\\q\") }",
            "{ a(x: \"line\nend\") }",
            "{ a(x: \"\"\"never closed) }",
            "{ a(x: \"tab\u{1}\") }",
            "\u{feff}{ a }",
            "{ é }",
            "{ a .. b }",
            "{ a } }",
            "{ a",
            "{ a: }",
            "{ a(x: [1, 2) }",
            "{ a(x: {b 1}) }",
            "{ a @ }",
            "query Q($a: [Int) { a }",
            "query Q($a: Int!!) { a }",
            "fragment F Q { a } { ...F }",
            // Valid, but refused by apollo-parser, whose lookahead counts commas as tokens.
            "{ a,: b }",
            "{ a , : b }",
            "{ ...,F } fragment F on Q { a }",
            "{ ... ,on Q { a } }",
        ] {
            defers(doc);
        }
        assert_eq!(both("query A { a }", Some("B")).0, None);
        let deep = format!(
            "{}a{}",
            "{ a ".repeat(MAX_NESTING + 1),
            " }".repeat(MAX_NESTING + 1)
        );
        defers(&deep);
        let mut chain = String::from("{ ...F0 }");
        for i in 0..=MAX_FRAGMENT_DEPTH {
            chain.push_str(&format!(" fragment F{i} on Q {{ ...F{} }}", i + 1));
        }
        chain.push_str(&format!(
            " fragment F{} on Q {{ a }}",
            MAX_FRAGMENT_DEPTH + 1
        ));
        defers(&chain);
    }

    #[test]
    fn long_field_lists_stay_de_duplicated_in_order() {
        let fields: Vec<String> = (0..40).map(|i| format!("f{}", i % 25)).collect();
        let doc = format!("{{ {} }}", fields.join(" "));
        let ops = agrees(&doc, None);
        assert_eq!(ops[0].1.len(), 25);
    }

    #[test]
    fn repeated_spreads_of_a_large_fragment_are_merged_once() {
        let fields: Vec<String> = (0..300).map(|i| format!("f{i}")).collect();
        let doc = format!(
            "{{ {} }} fragment F on Q {{ {} }}",
            "...F ... { ...F } ".repeat(300),
            fields.join(" ")
        );
        let ops = agrees(&doc, None);
        assert_eq!(ops[0].1, fields);
    }

    /// Pieces of GraphQL, valid and not, for documents the parser and the fast reader must
    /// agree on whenever the fast reader answers.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "query",
            "mutation",
            "subscription",
            "fragment",
            "on",
            "F",
            "G",
            "Mutation",
            "a",
            "volumeDelete",
            "b:",
            "x",
            "{",
            "}",
            "{",
            "}",
            "(",
            ")",
            "[",
            "]",
            "...",
            "..",
            ".",
            "@skip",
            "@d",
            "(if: true)",
            "$v",
            ":",
            "!",
            "=",
            "Int",
            "1",
            "-1",
            "0.5",
            "1e3",
            "01",
            "\"s\"",
            "\"\\\"\"",
            "\"\"\"b\"\"\"",
            "\"\"\"\\\"\"\"\"\"\"",
            "\"",
            "#c\n",
            ",",
            "\n",
            "|",
            "&",
            "true",
            "null",
            "é",
            "\t",
            "\\",
            "\"\\u00e9\"",
            "__typename",
            "type",
            "schema",
            "extend",
        ])
    }

    /// Writes valid documents from a seed: operations of every form, aliases, arguments of
    /// every kind of value, directives, sub-selections, inline fragments with and without type
    /// conditions, and spreads of three acyclic fragments; names include the keywords.
    struct Gen {
        state: u64,
        out: String,
    }

    impl Gen {
        fn pick(&mut self, n: usize) -> usize {
            // xorshift64*
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let r = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33;
            usize::try_from(r).unwrap() % n
        }

        fn put(&mut self, s: &str) {
            self.put_then(s, true);
        }

        /// Writes `s` and a separator; a comma only if `comma` (apollo-parser refuses one
        /// after `...` and between an alias and its colon).
        fn put_then(&mut self, s: &str, comma: bool) {
            self.out.push_str(s);
            let sep = [" ", "\n", " #c, \"x\" { é\n", "\t", "\r\n", ",", ", "];
            let i = self.pick(sep.len() - if comma { 0 } else { 2 });
            self.out.push_str(sep[i]);
        }

        fn name_then(&mut self, comma: bool) {
            let names = [
                "volumeDelete",
                "customDomainCreate",
                "__typename",
                "a",
                "query",
                "mutation",
                "fragment",
                "on",
                "subscription",
                "true",
                "null",
                "type",
                "_x9",
            ];
            let i = self.pick(names.len());
            self.put_then(names[i], comma);
        }

        fn name(&mut self) {
            self.name_then(true);
        }

        fn value(&mut self, depth: usize, constant: bool) {
            let values = [
                "0",
                "-12",
                "1.5e-3",
                "-0.0",
                "7E+2",
                "\"s\"",
                "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00E9é\"",
                "\"\"\"block \\\"\"\" \\ \" \"\" é\n\"\"\"",
                "\"\"",
                "\"\"\"\"\"\"",
                "ENUM",
                "true",
                "false",
                "null",
                "$v",
            ];
            match self.pick(if depth > 2 { 1 } else { 3 }) {
                0 => {
                    let n = values.len() - usize::from(constant);
                    let i = self.pick(n);
                    self.put(values[i]);
                }
                1 => {
                    self.put("[");
                    for _ in 0..self.pick(3) {
                        self.value(depth + 1, constant);
                    }
                    self.put("]");
                }
                _ => {
                    self.put("{");
                    for _ in 0..self.pick(3) {
                        self.name();
                        self.put(":");
                        self.value(depth + 1, constant);
                    }
                    self.put("}");
                }
            }
        }

        fn arguments(&mut self, constant: bool) {
            self.put("(");
            for _ in 0..=self.pick(2) {
                self.name();
                self.put(":");
                self.value(0, constant);
            }
            self.put(")");
        }

        fn directives(&mut self, constant: bool) {
            for _ in 0..self.pick(3) {
                self.put("@");
                self.name();
                if self.pick(2) == 0 {
                    self.arguments(constant);
                }
            }
        }

        fn selection_set(&mut self, depth: usize, max_fragment: usize) {
            self.put("{");
            for _ in 0..=self.pick(4) {
                match self.pick(if depth > 2 { 1 } else { 4 }) {
                    0 | 1 => {
                        if self.pick(3) == 0 {
                            self.name_then(false);
                            self.put(":");
                        }
                        self.name();
                        if self.pick(2) == 0 {
                            self.arguments(false);
                        }
                        self.directives(false);
                        // Bounded: unbounded, this branching is critical (a third of ~3
                        // fields nest), and now and then nests past `MAX_NESTING`, where the
                        // fast reader rightly leaves the document to the parser.
                        if depth < 8 && self.pick(3) == 0 {
                            self.selection_set(depth + 1, 3);
                        }
                    }
                    2 => {
                        self.put_then("...", false);
                        if self.pick(2) == 0 {
                            self.put("on");
                            self.put("Mutation");
                        }
                        self.directives(false);
                        self.selection_set(depth + 1, max_fragment);
                    }
                    _ if max_fragment > 0 => {
                        let f = ["F0", "F1", "F2"];
                        let i = 3 - 1 - self.pick(max_fragment).min(2);
                        self.put_then("...", false);
                        self.put(f[i]);
                        self.directives(false);
                    }
                    _ => self.put("x"),
                }
            }
            self.put("}");
        }

        fn document(seed: u64) -> String {
            let mut g = Gen {
                state: seed | 1,
                out: String::new(),
            };
            for _ in 0..=g.pick(2) {
                let keyword = g.pick(3);
                if keyword > 0 {
                    g.put(if keyword == 1 { "query" } else { "mutation" });
                    if g.pick(2) == 0 {
                        g.name();
                    }
                    if g.pick(2) == 0 {
                        g.put("(");
                        for _ in 0..=g.pick(2) {
                            g.put("$");
                            g.name();
                            g.put(":");
                            match g.pick(3) {
                                0 => g.put("Int"),
                                1 => g.put("[Int!]!"),
                                _ => g.put("[[ID]!]"),
                            }
                            if g.pick(2) == 0 {
                                g.put("=");
                                g.value(0, true);
                            }
                            g.directives(true);
                        }
                        g.put(")");
                    }
                    g.directives(false);
                }
                g.selection_set(0, 3);
            }
            // F2 spreads nothing, F1 may spread F2, F0 may spread F1 or F2: no cycles.
            for (name, max) in [("F0", 2), ("F1", 1), ("F2", 0)] {
                g.put("fragment");
                g.put(name);
                g.put("on");
                g.put("Mutation");
                g.directives(false);
                g.selection_set(0, max);
            }
            g.out
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn answers_valid_documents_as_the_parser_does(seed in any::<u64>()) {
            let doc = Gen::document(seed);
            // Longer documents are the parser's (the token limit).
            prop_assume!(doc.len() <= MAX_LEN);
            let (fast, reference) = both(&doc, None);
            prop_assert!(reference.is_ok(), "{:?}: {:?}", doc, reference);
            prop_assert!(fast.is_some(), "gave up on {:?}", doc);
            prop_assert_eq!(Ok(fast.unwrap()), reference, "{:?}", doc);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn never_disagrees_with_the_parser_on_token_soup(
            parts in prop::collection::vec(piece(), 0..40),
            spaced in any::<bool>(),
        ) {
            let doc = parts.join(if spaced { " " } else { "" });
            if let (Some(fast), reference) = both(&doc, None) {
                prop_assert_eq!(Ok(fast), reference, "{:?}", doc);
            }
        }

        #[test]
        fn never_disagrees_with_the_parser_on_arbitrary_text(doc in "\\PC{0,80}") {
            if let (Some(fast), reference) = both(&doc, None) {
                prop_assert_eq!(Ok(fast), reference, "{:?}", doc);
            }
        }

        #[test]
        fn never_disagrees_with_the_parser_on_ascii_bytes(doc in "[ -~\t\n\r]{0,80}") {
            if let (Some(fast), reference) = both(&doc, None) {
                prop_assert_eq!(Ok(fast), reference, "{:?}", doc);
            }
        }
    }
}

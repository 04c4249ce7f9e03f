//! Errors of the policy crate: a catalog or policy file that does not load, and a request that
//! cannot be classified.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// The catalog (or, later, a policy file) could not be loaded. Every variant names the file, and
/// where it can, the line.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A catalog file is not valid TOML, or does not have the expected shape.
    #[error(
        "catalog file `{file}` line {line}: {message}\nhint: see docs/catalog.md for the shape of a profile"
    )]
    CatalogSyntax {
        /// The file, as given or `catalog/<name>.toml` for a built-in one.
        file: String,
        /// The 1-based line of the problem.
        line: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// A catalog file parsed but says something invalid (a bad operation name, an unknown class,
    /// a duplicate route, …).
    #[error("catalog file `{file}` line {line}: {message}\nhint: {hint}")]
    CatalogInvalid {
        /// The file.
        file: String,
        /// The 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
        /// What to do about it.
        hint: String,
    },
    /// The catalog folder could not be read.
    #[error("cannot read the catalog folder `{}`: {source}\nhint: check `[catalog] dir` in the config", dir.display())]
    CatalogDir {
        /// The folder.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A Cedar policy file does not parse.
    #[error(
        "policy file `{file}` line {line}: {message}\nhint: see https://docs.cedarpolicy.com for the policy syntax"
    )]
    PolicySyntax {
        /// The file.
        file: String,
        /// The 1-based line of the problem.
        line: usize,
        /// What the Cedar parser said.
        message: String,
    },
    /// A Cedar policy parses but does not validate against the schema generated from the
    /// catalog (an unknown operation, a context attribute that does not exist, …).
    #[error(
        "policy file `{file}` line {line}: {message}\nhint: policies are checked against the schema made from the catalog (see docs/catalog.md, policies): actions are `Action::\"<operation>\"`"
    )]
    PolicyInvalid {
        /// The file.
        file: String,
        /// The 1-based line of the policy or the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The policy folder could not be read.
    #[error("cannot read the policy folder `{}`: {source}\nhint: check `[policy] dir` in the config", dir.display())]
    PolicyDir {
        /// The folder.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A policy file could not be read.
    #[error("cannot read the policy file `{}`: {source}", file.display())]
    PolicyFile {
        /// The file.
        file: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The Cedar schema generated from the catalog was refused (a fault of Blastwall's).
    #[error("internal: the generated Cedar schema is invalid: {message}")]
    Schema {
        /// What Cedar said.
        message: String,
    },
    /// A catalog file could not be read.
    #[error("cannot read the catalog file `{}`: {source}", file.display())]
    CatalogFile {
        /// The file.
        file: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A request that cannot be classified, and so is refused. Each message is written for the agent
/// that sent the request.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClassifyError {
    /// The path does not normalize to one clear meaning (an encoded slash or dot segment, a
    /// control character, `..` above the root, a bad percent escape).
    #[error(
        "path `{path}` is ambiguous: {reason}\nhint: send the path in plain form, without encoded slashes, encoded dot segments or control characters"
    )]
    AmbiguousPath {
        /// The path as sent (bounded in length).
        path: String,
        /// What makes it ambiguous.
        reason: &'static str,
    },
    /// The method is not an HTTP method token.
    #[error("method `{method}` is not an HTTP method\nhint: use GET, POST, PUT, PATCH, DELETE, …")]
    BadMethod {
        /// The method as sent (bounded in length).
        method: String,
    },
    /// A method-override header (`X-HTTP-Method-Override` and friends) was sent. The gateway
    /// refuses these rather than guess which method the upstream will honour.
    #[error(
        "the `{header}` header is not accepted\nhint: send the request with its real method and without `{header}`"
    )]
    MethodOverride {
        /// The header's name.
        header: String,
    },
    /// A `_method` parameter (in the query string, a form body or a JSON body's top level) was
    /// sent: frameworks such as Laravel, Symfony and Rails run a POST carrying one as that
    /// method, so the gateway refuses it rather than guess.
    #[error(
        "a `_method` {place} is not accepted\nhint: send the request with its real method and without `_method`"
    )]
    MethodParameter {
        /// Where it was found.
        place: &'static str,
    },
    /// A header that some servers route by instead of the request path (`X-Original-URL`,
    /// `X-Rewrite-URL`) was sent.
    #[error(
        "the `{header}` header is not accepted (some servers route by it instead of the path)\nhint: send the request to its real path, without `{header}`"
    )]
    TargetOverride {
        /// The header's name.
        header: String,
    },
    /// The request body is content-encoded (gzip, br, …): the gateway classifies the bytes it
    /// reads, so it does not forward a body the upstream would decode into something else.
    #[error(
        "a request body with `Content-Encoding: {encoding}` is not accepted\nhint: send the body unencoded (no `Content-Encoding`, or `identity`)"
    )]
    ContentEncoding {
        /// The encoding as sent (bounded in length).
        encoding: String,
    },
    /// The GraphQL request is not `{"query": …}` JSON (or an array of those), nor a GET with
    /// `?query=`.
    #[error(
        "the GraphQL request is not valid: {detail}\nhint: send `{{\"query\": \"…\"}}` as JSON (or an array of such objects), or GET with `?query=`"
    )]
    GraphqlRequest {
        /// What is wrong.
        detail: String,
    },
    /// The GraphQL document does not parse.
    #[error(
        "the GraphQL document does not parse: {detail}\nhint: fix the syntax; the gateway never forwards a document it cannot read"
    )]
    GraphqlSyntax {
        /// The parser's first complaint.
        detail: String,
    },
    /// `operationName` names an operation the document does not contain.
    #[error(
        "`operationName` is `{name}`, but the document has no operation of that name\nhint: name one of the document's operations, or leave `operationName` out"
    )]
    UnknownOperationName {
        /// The name given (bounded in length).
        name: String,
    },
    /// The document holds a subscription; the gateway classifies only queries and mutations.
    #[error("subscriptions are not accepted through the gateway\nhint: use a query or a mutation")]
    Subscription,
    /// The document is too deep or too large to classify (fragments nested beyond the limit, or
    /// too many operations).
    #[error(
        "the GraphQL document is too complex to classify: {detail}\nhint: send a simpler document, or split it"
    )]
    TooComplex {
        /// Which limit was hit.
        detail: String,
    },
}

/// Bounds what an error echoes back of a value the client sent, marking a cut with `…`.
pub(crate) fn bounded(text: &str) -> String {
    const MAX: usize = 160;
    let mut out: String = text.chars().take(MAX).collect();
    if text.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

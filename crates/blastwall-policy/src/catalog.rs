//! The operation catalog: provider profiles (`catalog/*.toml`, embedded at build time, plus any
//! in an operator's catalog folder), each naming the operations of one upstream API, their
//! classes, and how requests map to them. The file shape is documented in `docs/catalog.md`.

mod raw;
pub(crate) mod route;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use blastwall_core::operation::{OperationClass, OperationName, OperationPattern};
use secrecy::SecretString;

use crate::classify::memo::Memo;
use crate::error::PolicyError;
use route::Route;

/// The profiles shipped with Blastwall: `(file name, contents)`.
const BUILTIN: &[(&str, &str)] = &[
    (
        "catalog/railway.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../catalog/railway.toml"
        )),
    ),
    (
        "catalog/github.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../catalog/github.toml"
        )),
    ),
    (
        "catalog/rest.toml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../catalog/rest.toml"
        )),
    ),
];

/// Every profile Blastwall knows, validated.
#[derive(Debug, Clone)]
pub struct Catalog {
    profiles: BTreeMap<String, Profile>,
}

impl Catalog {
    /// The built-in profiles only (`railway`, `github`, `rest`).
    pub fn builtin() -> Result<Self, PolicyError> {
        Self::load(None)
    }

    /// The built-in profiles plus every `*.toml` file in `extra_dir` (other files are ignored).
    /// A profile in `extra_dir` with the name of a built-in one replaces it; two files in
    /// `extra_dir` naming the same profile are an error. Everything is validated: the first
    /// problem found is returned, naming the file and line.
    pub fn load(extra_dir: Option<&Path>) -> Result<Self, PolicyError> {
        let mut profiles = BTreeMap::new();
        for (file, text) in BUILTIN {
            let profile = Profile::parse(file, text)?;
            profiles.insert(profile.name.clone(), profile);
        }
        if let Some(dir) = extra_dir {
            let mut seen: HashMap<String, String> = HashMap::new();
            for (path, text) in read_toml_files(dir)? {
                let file = path.display().to_string();
                let profile = Profile::parse(&file, &text)?;
                if let Some(first) = seen.insert(profile.name.clone(), file.clone()) {
                    return Err(PolicyError::CatalogInvalid {
                        file,
                        line: profile.name_line,
                        message: format!(
                            "profile `{}` is already defined in `{first}`",
                            profile.name
                        ),
                        hint: "give each profile its own name".into(),
                    });
                }
                profiles.insert(profile.name.clone(), profile);
            }
        }
        Ok(Self { profiles })
    }

    /// Builds a catalog from profile texts alone, without the built-in ones: `(file, text)`
    /// pairs. Useful to check a profile before installing it, and in tests.
    pub fn from_texts<'a>(
        texts: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, PolicyError> {
        let mut profiles = BTreeMap::new();
        for (file, text) in texts {
            let profile = Profile::parse(file, text)?;
            if profiles.contains_key(&profile.name) {
                return Err(PolicyError::CatalogInvalid {
                    file: file.to_owned(),
                    line: profile.name_line,
                    message: format!("profile `{}` is defined twice", profile.name),
                    hint: "give each profile its own name".into(),
                });
            }
            profiles.insert(profile.name.clone(), profile);
        }
        Ok(Self { profiles })
    }

    /// The profile called `name`.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Every profile, by name.
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    /// Every operation of every profile, each profile's `<profile>:unknown` included.
    pub fn operations(&self) -> impl Iterator<Item = &OperationDef> {
        self.profiles.values().flat_map(Profile::operations)
    }

    /// The operation called `name`.
    pub fn operation(&self, name: &OperationName) -> Option<&OperationDef> {
        self.profiles.get(name.profile())?.operation(name)
    }

    /// The operations a scope pattern covers. An empty result means the pattern names nothing
    /// this catalog knows, and the caller should refuse the scope. An operation marked
    /// `explicit` (it reveals or mints a credential) is covered only by a pattern that names it
    /// exactly, never by a wildcard.
    pub fn expand(&self, pattern: &OperationPattern) -> Vec<&OperationDef> {
        let profiles: Vec<&Profile> = match pattern.profile() {
            Some(p) => self.profiles.get(p).into_iter().collect(),
            None => self.profiles.values().collect(),
        };
        let exact = pattern.is_exact();
        profiles
            .into_iter()
            .flat_map(Profile::operations)
            .filter(|op| pattern.matches(&op.name) && (exact || !op.explicit))
            .collect()
    }

    /// The class of an operation, or `None` if the catalog does not know it. A known profile's
    /// `<profile>:unknown` is destructive.
    pub fn class_of(&self, name: &OperationName) -> Option<OperationClass> {
        self.operation(name).map(|op| op.class)
    }
}

/// One operation of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationDef {
    /// `<profile>:<resource>.<verb>`.
    pub name: OperationName,
    /// How much harm it can do.
    pub class: OperationClass,
    /// One line for people: what it does.
    pub summary: String,
    /// The requests that map to it, as written in the profile: `mutation volumeDelete`,
    /// `query *`, `DELETE /repos/{owner}/{repo}`. Empty for `<profile>:unknown`.
    pub requests: Vec<String>,
    /// Granted only by a scope that names it exactly, never by a wildcard: it reveals or mints a
    /// credential (`railway:variable.read`, `railway:api_token.create`), so `railway:*` or
    /// `railway:*.read` must not hand it out unnoticed.
    pub explicit: bool,
}

/// How a profile's requests are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfileKind {
    /// A GraphQL API: operations come from the root fields of the document.
    Graphql,
    /// A REST API: operations come from the method and the path template.
    Rest,
}

impl ProfileKind {
    /// The kind as written in a profile.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Graphql => "graphql",
            Self::Rest => "rest",
        }
    }
}

impl fmt::Display for ProfileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a profile compares the literal parts of paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathCase {
    /// Byte for byte.
    Sensitive,
    /// Without regard to ASCII case.
    Insensitive,
}

/// How the gateway injects the upstream credential: a header and a value template holding
/// `{credential}` once, e.g. `Authorization: Bearer {credential}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialTemplate {
    header: String,
    prefix: String,
    suffix: String,
}

impl CredentialTemplate {
    /// The header name, as written in the profile (e.g. `Authorization`).
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The template as written, e.g. `Bearer {credential}`.
    pub fn template(&self) -> String {
        format!("{}{{credential}}{}", self.prefix, self.suffix)
    }

    /// The header value with `credential` in place.
    pub fn render(&self, credential: &str) -> SecretString {
        SecretString::from(format!("{}{credential}{}", self.prefix, self.suffix))
    }
}

/// A sample request declared in a profile, with what it must classify as. The test suite runs
/// every sample of every built-in profile.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sample {
    /// What it shows.
    pub name: String,
    /// The HTTP method.
    pub method: String,
    /// The path and query, as sent.
    pub path: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: String,
    /// What classification must give.
    pub expect: SampleExpect,
}

/// What a sample must classify as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleExpect {
    /// These operations (in any order) with this strictest class.
    Classified {
        /// The operations.
        ops: Vec<OperationName>,
        /// The strictest class.
        class: OperationClass,
    },
    /// The request is refused.
    Refused,
}

/// One provider profile: an upstream API's operations and how its requests map to them.
#[derive(Debug, Clone)]
pub struct Profile {
    name: String,
    name_line: usize,
    kind: ProfileKind,
    summary: String,
    source: String,
    path_case: PathCase,
    credential: CredentialTemplate,
    /// Every operation; the last one is `<profile>:unknown`.
    operations: Vec<OperationDef>,
    pub(crate) rules: Rules,
    samples: Vec<Sample>,
    /// Recent GraphQL answers, shared by clones (see [`crate::classify::Engine`]).
    pub(crate) memo: Arc<Memo>,
}

/// How requests map to operations (indexes into `Profile::operations`).
#[derive(Debug, Clone)]
pub(crate) enum Rules {
    Graphql(GraphqlRules),
    Rest(RestRules),
}

/// GraphQL mapping.
#[derive(Debug, Clone, Default)]
pub(crate) struct GraphqlRules {
    /// Normalized paths that accept GraphQL.
    pub(crate) endpoints: Vec<String>,
    pub(crate) mutations: HashMap<String, usize>,
    pub(crate) queries: HashMap<String, usize>,
    pub(crate) mutation_fallback: Option<usize>,
    pub(crate) query_fallback: Option<usize>,
}

/// REST mapping.
#[derive(Debug, Clone, Default)]
pub(crate) struct RestRules {
    pub(crate) routes: Vec<Route>,
}

impl Profile {
    /// Parses and validates one profile file.
    pub fn parse(file: &str, text: &str) -> Result<Self, PolicyError> {
        raw::parse(file, text)
    }

    /// The profile's name (`railway`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// GraphQL or REST.
    pub fn kind(&self) -> ProfileKind {
        self.kind
    }

    /// One line for people.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The file it came from (`catalog/railway.toml` for a built-in one).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How literal path segments are compared.
    pub fn path_case(&self) -> PathCase {
        self.path_case
    }

    /// How the upstream credential is injected.
    pub fn credential(&self) -> &CredentialTemplate {
        &self.credential
    }

    /// The operations, `<profile>:unknown` last.
    pub fn operations(&self) -> impl Iterator<Item = &OperationDef> {
        self.operations.iter()
    }

    /// The operation called `name`.
    pub fn operation(&self, name: &OperationName) -> Option<&OperationDef> {
        self.operations.iter().find(|op| &op.name == name)
    }

    /// The sample requests the profile declares.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// For a GraphQL profile, the paths that accept GraphQL; empty for REST.
    pub fn graphql_endpoints(&self) -> &[String] {
        match &self.rules {
            Rules::Graphql(g) => &g.endpoints,
            Rules::Rest(_) => &[],
        }
    }

    /// The operation at `index` (an index the rules hold).
    pub(crate) fn op_at(&self, index: usize) -> Option<&OperationDef> {
        self.operations.get(index)
    }
}

/// Reads every `*.toml` file of `dir`, sorted by name.
fn read_toml_files(dir: &Path) -> Result<Vec<(std::path::PathBuf, String)>, PolicyError> {
    read_files_with_extension(dir, "toml").map_err(|e| match e {
        ReadError::Dir(source) => PolicyError::CatalogDir {
            dir: dir.to_owned(),
            source,
        },
        ReadError::File(file, source) => PolicyError::CatalogFile { file, source },
    })
}

/// Why [`read_files_with_extension`] failed: the folder, or one file in it.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The folder could not be listed.
    Dir(std::io::Error),
    /// A file could not be read.
    File(std::path::PathBuf, std::io::Error),
}

/// Reads every regular file of `dir` whose extension is `ext`, sorted by name (catalog profiles
/// and operator policies are both loaded this way).
pub(crate) fn read_files_with_extension(
    dir: &Path,
    ext: &str,
) -> Result<Vec<(std::path::PathBuf, String)>, ReadError> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(ReadError::Dir)? {
        let path = entry.map_err(ReadError::Dir)?.path();
        if path.extension().is_some_and(|e| e == ext) && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| match std::fs::read_to_string(&path) {
            Ok(text) => Ok((path, text)),
            Err(source) => Err(ReadError::File(path, source)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(s: &str) -> OperationName {
        OperationName::new(s).unwrap()
    }

    #[test]
    fn builtin_loads() {
        let c = Catalog::builtin().unwrap();
        assert!(c.profile("railway").is_some());
        assert!(c.profile("github").is_some());
        assert!(c.profile("rest").is_some());
        assert_eq!(
            c.class_of(&op("railway:volume.delete")),
            Some(OperationClass::Destructive)
        );
        assert_eq!(
            c.class_of(&OperationName::unknown("github")),
            Some(OperationClass::Destructive)
        );
        assert_eq!(c.class_of(&op("nope:x.y")), None);
    }

    #[test]
    fn expand_patterns() {
        let c = Catalog::builtin().unwrap();
        let names = |p: &str| -> Vec<String> {
            c.expand(&OperationPattern::new(p).unwrap())
                .iter()
                .map(|o| o.name.to_string())
                .collect()
        };
        let domain = names("railway:domain.*");
        assert!(domain.contains(&"railway:domain.create".to_owned()));
        assert!(!domain.contains(&"railway:volume.delete".to_owned()));
        assert!(names("railway:*").len() > 50);
        assert!(!names("railway:*").contains(&"railway:unknown".to_owned()));
        assert_eq!(names("railway:unknown"), ["railway:unknown"]);
        assert!(names("*:*.read").iter().any(|n| n.starts_with("github:")));
        assert!(names("railway:nothing.*").is_empty());
        assert!(names("nope:*").is_empty());
        // What reveals or mints a credential, or opens a way past the gateway, comes only by
        // name.
        for wildcard in [
            "railway:*",
            "*:*",
            "railway:*.read",
            "railway:variable.*",
            "*:*.create",
            "github:*",
            "github:webhook.*",
            "*:*.configure",
        ] {
            let got = names(wildcard);
            for op in [
                "railway:variable.read",
                "railway:bucket_credentials.read",
                "railway:api_token.create",
                "railway:project_token.create",
                "github:deploy_key.create",
                "github:webhook.configure",
                "github:repo.update_settings",
                "github:repo.transfer",
                "github:collaborator.change",
            ] {
                assert!(!got.contains(&op.to_owned()), "{wildcard} grants {op}");
            }
        }
        assert!(names("railway:*.read").contains(&"railway:project.read".to_owned()));
        assert_eq!(names("railway:variable.read"), ["railway:variable.read"]);
        assert_eq!(
            names("railway:api_token.create"),
            ["railway:api_token.create"]
        );
        assert_eq!(
            names("github:webhook.configure"),
            ["github:webhook.configure"]
        );
        assert!(names("github:webhook.*").contains(&"github:webhook.delete".to_owned()));
    }

    #[test]
    fn credential_template() {
        let c = Catalog::builtin().unwrap();
        let t = c.profile("railway").unwrap().credential();
        assert_eq!(t.header(), "Authorization");
        assert_eq!(t.template(), "Bearer {credential}");
        use secrecy::ExposeSecret;
        assert_eq!(t.render("abc").expose_secret(), "Bearer abc");
    }
}

//! Authorization with Cedar: the schema is generated from the catalog, a token's scope compiles
//! to `permit` policies, environment guardrails are `forbid` policies, and operators add
//! `.cedar` files. Everything is validated against the schema when the [`Authorizer`] is built,
//! so a typo in a policy stops the start, not a request.
//!
//! The Cedar model (the generated schema is [`Authorizer::schema_text`]):
//!
//! - principal `Token::"<token id>"`, resource `Environment::"<name>"`, action
//!   `Action::"<operation>"` (`Action::"railway:volume.delete"`);
//! - each action is in the groups `Action::"class:<class>"` and `Action::"profile:<profile>"`,
//!   so a policy can say `action in Action::"class:destructive"`;
//! - the context: `approved` (the request carries a valid approval), `class` (this request's
//!   class for the operation), `tier` (`prod` or `nonprod`), `environment`, `upstream`, `owner`,
//!   `holder`.
//!
//! Default deny: an operation is allowed only when the token's scope permits it and no `forbid`
//! applies. The built-in guardrail forbids destructive operations in a `prod` environment unless
//! `approved`; that refusal becomes [`Verdict::Hold`] (ask a human), every other refusal
//! [`Verdict::Deny`] with a reason written for the agent.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use blastwall_core::environment::Tier;
use blastwall_core::operation::{OperationClass, OperationName, OperationPattern};
use cedar_policy::{
    Context, Decision as CedarDecision, Entities, EntityId, EntityTypeName, EntityUid, Policy,
    PolicyId, PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};

use crate::catalog::Catalog;
use crate::error::PolicyError;

/// The id of the built-in guardrail that holds destructive operations in prod.
pub const PROD_GUARDRAIL_ID: &str = "guardrail:prod-destructive";

/// Built-in guardrails, in Cedar.
const GUARDRAILS: &str = r#"
// A prod-tier environment never runs a destructive operation without a human's approval.
@id("guardrail:prod-destructive")
forbid (principal, action, resource)
when { context.tier == "prod" && context.class == "destructive" && !context.approved };
"#;

/// Most distinct scopes whose compiled policy sets are kept; past it the cache starts over.
const CACHE_LIMIT: usize = 4096;

/// Who asks, where, and under which approval: everything about a request except its operations.
#[derive(Debug, Clone, Copy)]
pub struct DecideInput<'a> {
    /// The token's id (never the token itself).
    pub token_id: &'a str,
    /// The token's scope.
    pub scope: &'a [OperationPattern],
    /// The environment's name.
    pub environment: &'a str,
    /// The environment's tier.
    pub tier: Tier,
    /// The upstream's name.
    pub upstream: &'a str,
    /// The token's human owner.
    pub owner: &'a str,
    /// The token's holder (`cursor-agent`).
    pub holder: &'a str,
    /// Whether the request carries a valid approval for exactly this request.
    pub approved: bool,
}

/// The outcome for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every operation is allowed.
    Allow,
    /// Refused.
    Deny {
        /// The first operation refused.
        operation: OperationName,
        /// Why, for the agent: "outside this token's scope (railway:domain.*)".
        reason: String,
        /// What to do next.
        hint: String,
    },
    /// Allowed only once a human approves: these operations are held by a guardrail.
    Hold {
        /// The operations that need approval.
        operations: Vec<OperationName>,
    },
}

/// Where a loaded policy came from, to explain a refusal.
#[derive(Debug, Clone)]
struct Source {
    file: String,
    line: usize,
    /// The policy's `@id` annotation, if any.
    label: Option<String>,
}

/// Decides requests with Cedar. Cheap to share (`&self` everywhere); per-scope policy sets are
/// compiled once and cached.
#[derive(Debug)]
pub struct Authorizer {
    schema: Schema,
    schema_text: String,
    /// Guardrails and operator policies.
    base: PolicySet,
    sources: HashMap<PolicyId, Source>,
    catalog: Catalog,
    cedar: cedar_policy::Authorizer,
    entities: Entities,
    token_type: EntityTypeName,
    action_type: EntityTypeName,
    env_type: EntityTypeName,
    cache: RwLock<HashMap<String, Arc<PolicySet>>>,
    /// Verdicts by everything they depend on: policies are pure functions of the request (no
    /// entity data but the action groups), so a repeated request is a map lookup.
    verdicts: RwLock<HashMap<String, Verdict>>,
}

impl Authorizer {
    /// Builds the schema from `catalog`, loads the guardrails and every `*.cedar` file of
    /// `policy_dir`, and validates them all. A policy that does not parse or does not validate
    /// is an error naming its file and line.
    pub fn new(catalog: &Catalog, policy_dir: Option<&Path>) -> Result<Self, PolicyError> {
        let schema_text = schema_text(catalog);
        let (schema, _warnings) =
            Schema::from_cedarschema_str(&schema_text).map_err(|e| PolicyError::Schema {
                message: one_line(&e.to_string()),
            })?;
        let mut base = PolicySet::new();
        let mut sources = HashMap::new();
        let mut texts = HashMap::new();
        add_file(&mut base, &mut sources, "built-in guardrails", GUARDRAILS)?;
        if let Some(dir) = policy_dir {
            for (path, text) in read_cedar_files(dir)? {
                let file = path.display().to_string();
                add_file(&mut base, &mut sources, &file, &text)?;
                texts.insert(file, text);
            }
        }
        let validation = Validator::new(schema.clone()).validate(&base, ValidationMode::Strict);
        if let Some(e) = validation.validation_errors().next() {
            let (file, line) = locate(&sources, &texts, e.policy_id(), e);
            return Err(PolicyError::PolicyInvalid {
                file,
                line,
                message: one_line(&e.to_string()),
            });
        }
        // The action hierarchy (class and profile groups) is the only entity data Cedar needs.
        let entities = schema.action_entities().map_err(|e| PolicyError::Schema {
            message: one_line(&e.to_string()),
        })?;
        let type_name = |t: &str| {
            EntityTypeName::from_str(t).map_err(|e| PolicyError::Schema {
                message: one_line(&e.to_string()),
            })
        };
        Ok(Self {
            schema,
            schema_text,
            base,
            sources,
            catalog: catalog.clone(),
            cedar: cedar_policy::Authorizer::new(),
            entities,
            token_type: type_name("Token")?,
            action_type: type_name("Action")?,
            env_type: type_name("Environment")?,
            cache: RwLock::new(HashMap::new()),
            verdicts: RwLock::new(HashMap::new()),
        })
    }

    /// The Cedar schema generated from the catalog, for operators writing policies.
    pub fn schema_text(&self) -> &str {
        &self.schema_text
    }

    /// The Cedar schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Checks a scope: every pattern must cover at least one operation of the catalog. Returns
    /// the operations it covers, for the issuer to see.
    pub fn check_scope(&self, scope: &[OperationPattern]) -> Result<Vec<OperationName>, String> {
        compile_scope_actions(&self.catalog, scope)
    }

    /// Decides a request that performs `ops` (as classification gives them). Never fails: an
    /// internal problem is a `Deny` with a reason.
    pub fn decide(
        &self,
        input: &DecideInput<'_>,
        ops: &[(OperationName, OperationClass)],
    ) -> Verdict {
        let key = verdict_key(input, ops);
        if let Ok(verdicts) = self.verdicts.read()
            && let Some(v) = verdicts.get(&key)
        {
            return v.clone();
        }
        let verdict = self.decide_uncached(input, ops);
        if let Ok(mut verdicts) = self.verdicts.write() {
            if verdicts.len() >= CACHE_LIMIT * 4 {
                verdicts.clear();
            }
            verdicts.insert(key, verdict.clone());
        }
        verdict
    }

    /// [`Authorizer::decide`] without the verdict memo: asks Cedar every time (the scope's
    /// compiled policy set is still cached). For benchmarks and tests of the memo.
    pub fn decide_uncached(
        &self,
        input: &DecideInput<'_>,
        ops: &[(OperationName, OperationClass)],
    ) -> Verdict {
        let policies = match self.policies_for(input.scope) {
            Ok(p) => p,
            Err(reason) => {
                return Verdict::Deny {
                    operation: ops
                        .first()
                        .map_or_else(|| OperationName::unknown("blastwall"), |(n, _)| n.clone()),
                    reason,
                    hint: "ask for a token whose scope names operations of the catalog".into(),
                };
            }
        };
        if ops.is_empty() {
            return Verdict::Deny {
                operation: OperationName::unknown("blastwall"),
                reason: "the request performs no operation the gateway could name".into(),
                hint: "send a request the upstream's profile describes".into(),
            };
        }
        let mut held = Vec::new();
        for (op, class) in ops {
            match self.decide_one(&policies, input, op, *class, input.approved) {
                Ok(None) => {}
                Ok(Some(Refusal::Guardrail)) => {
                    // Held only if an approval would let it through.
                    match self.decide_one(&policies, input, op, *class, true) {
                        Ok(None) => held.push(op.clone()),
                        Ok(Some(r)) => return self.deny(input, op, r),
                        Err(reason) => return internal(op, reason),
                    }
                }
                Ok(Some(r)) => return self.deny(input, op, r),
                Err(reason) => return internal(op, reason),
            }
        }
        if held.is_empty() {
            Verdict::Allow
        } else {
            Verdict::Hold { operations: held }
        }
    }

    /// The compiled policy set for a scope, from the cache or compiled now.
    fn policies_for(&self, scope: &[OperationPattern]) -> Result<Arc<PolicySet>, String> {
        let key = scope
            .iter()
            .map(OperationPattern::as_str)
            .collect::<Vec<_>>()
            .join("\n");
        if let Ok(cache) = self.cache.read()
            && let Some(p) = cache.get(&key)
        {
            return Ok(Arc::clone(p));
        }
        let actions = compile_scope_actions(&self.catalog, scope)?;
        let mut set = self.base.clone();
        let mut text = String::from("permit (principal, action in [");
        for (i, a) in actions.iter().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            // Operation names hold only `[A-Za-z0-9_:.-]`: nothing to escape.
            let _ = write!(text, "Action::\"{a}\"");
        }
        text.push_str("], resource);");
        let policy = Policy::parse(Some(PolicyId::new("scope")), &text).map_err(|e| {
            format!(
                "internal: the scope did not compile: {}",
                one_line(&e.to_string())
            )
        })?;
        set.add(policy).map_err(|e| {
            format!(
                "internal: the scope did not compile: {}",
                one_line(&e.to_string())
            )
        })?;
        let set = Arc::new(set);
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key, Arc::clone(&set));
        }
        Ok(set)
    }

    /// `Ok(None)` when allowed; `Ok(Some(why))` when refused.
    fn decide_one(
        &self,
        policies: &PolicySet,
        input: &DecideInput<'_>,
        op: &OperationName,
        class: OperationClass,
        approved: bool,
    ) -> Result<Option<Refusal>, String> {
        let uid = |t: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(t.clone(), EntityId::new(id))
        };
        let string = |s: &str| RestrictedExpression::new_string(s.to_owned());
        let context = Context::from_pairs([
            (
                "approved".to_owned(),
                RestrictedExpression::new_bool(approved),
            ),
            ("class".to_owned(), string(class.as_str())),
            ("tier".to_owned(), string(input.tier.as_str())),
            ("environment".to_owned(), string(input.environment)),
            ("upstream".to_owned(), string(input.upstream)),
            ("owner".to_owned(), string(input.owner)),
            ("holder".to_owned(), string(input.holder)),
        ])
        .map_err(|e| format!("internal: {}", one_line(&e.to_string())))?;
        let request = Request::new(
            uid(&self.token_type, input.token_id),
            uid(&self.action_type, op.as_str()),
            uid(&self.env_type, input.environment),
            context,
            None,
        )
        .map_err(|e| format!("internal: {}", one_line(&e.to_string())))?;
        let response = self.cedar.is_authorized(&request, policies, &self.entities);
        if response.decision() == CedarDecision::Allow {
            return Ok(None);
        }
        let forbids: Vec<&PolicyId> = response.diagnostics().reason().collect();
        if forbids.is_empty() {
            return Ok(Some(Refusal::NotPermitted));
        }
        if forbids
            .iter()
            .all(|id| AsRef::<str>::as_ref(*id) == PROD_GUARDRAIL_ID)
        {
            return Ok(Some(Refusal::Guardrail));
        }
        let first = forbids
            .iter()
            .find(|id| AsRef::<str>::as_ref(**id) != PROD_GUARDRAIL_ID)
            .and_then(|id| self.sources.get(*id));
        Ok(Some(Refusal::Forbidden(first.cloned())))
    }

    fn deny(&self, input: &DecideInput<'_>, op: &OperationName, why: Refusal) -> Verdict {
        let scope = input
            .scope
            .iter()
            .map(OperationPattern::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let (reason, hint) = match why {
            Refusal::NotPermitted => (
                format!("outside this token's scope ({scope})"),
                format!("ask the token's owner for a token whose scope includes `{op}`"),
            ),
            Refusal::Guardrail => (
                format!(
                    "`{op}` is destructive and `{}` is a production environment",
                    input.environment
                ),
                "ask a human to approve this request".to_owned(),
            ),
            Refusal::Forbidden(source) => (
                match source {
                    Some(s) => format!(
                        "forbidden by policy {}in `{}` line {}",
                        s.label.map(|l| format!("`{l}` ")).unwrap_or_default(),
                        s.file,
                        s.line
                    ),
                    None => "forbidden by an operator policy".to_owned(),
                },
                "this operation is not allowed here for this token; ask the gateway's operator"
                    .to_owned(),
            ),
        };
        Verdict::Deny {
            operation: op.clone(),
            reason,
            hint,
        }
    }
}

/// Everything a verdict depends on, as one string; each part is length-prefixed so that no two
/// different inputs give the same key.
fn verdict_key(input: &DecideInput<'_>, ops: &[(OperationName, OperationClass)]) -> String {
    let mut key = String::with_capacity(160);
    let approved = if input.approved { "1" } else { "0" };
    let parts = [
        input.token_id,
        input.environment,
        input.tier.as_str(),
        input.upstream,
        input.owner,
        input.holder,
        approved,
    ]
    .into_iter()
    .chain(input.scope.iter().map(OperationPattern::as_str))
    .chain(std::iter::once("|"))
    .chain(
        ops.iter()
            .flat_map(|(op, class)| [op.as_str(), class.as_str()]),
    );
    for part in parts {
        let _ = write!(key, "{}:{part}", part.len());
    }
    key
}

/// Why one operation was refused.
#[derive(Debug, Clone)]
enum Refusal {
    /// No permit matched: outside the scope.
    NotPermitted,
    /// Only the prod guardrail forbade it.
    Guardrail,
    /// An operator's forbid policy.
    Forbidden(Option<Source>),
}

fn internal(op: &OperationName, reason: String) -> Verdict {
    Verdict::Deny {
        operation: op.clone(),
        reason,
        hint: "this is a gateway fault; the operator's log has the detail".into(),
    }
}

/// The actions a scope permits: every operation matching one of its patterns. A pattern that
/// matches nothing is an error.
fn compile_scope_actions(
    catalog: &Catalog,
    scope: &[OperationPattern],
) -> Result<Vec<OperationName>, String> {
    let mut out: Vec<OperationName> = Vec::new();
    for pattern in scope {
        let ops = catalog.expand(pattern);
        if ops.is_empty() {
            return Err(format!(
                "scope pattern `{pattern}` matches no operation of the catalog"
            ));
        }
        for op in ops {
            if !out.contains(&op.name) {
                out.push(op.name.clone());
            }
        }
    }
    Ok(out)
}

/// The Cedar schema for a catalog, in Cedar's schema syntax.
pub fn schema_text(catalog: &Catalog) -> String {
    let mut s = String::from(
        "// Generated from the operation catalog by blastwall-policy.\n\
         entity Token;\n\
         entity Environment;\n\
         type RequestContext = {\n  \
           approved: Bool,\n  class: String,\n  tier: String,\n  environment: String,\n  \
           upstream: String,\n  owner: String,\n  holder: String,\n};\n\
         action \"class:read\", \"class:write\", \"class:destructive\";\n",
    );
    for profile in catalog.profiles() {
        let _ = writeln!(s, "action \"profile:{}\";", profile.name());
    }
    for op in catalog.operations() {
        let _ = writeln!(
            s,
            "action \"{}\" in [\"class:{}\", \"profile:{}\"] appliesTo {{ principal: [Token], resource: [Environment], context: RequestContext }};",
            op.name,
            op.class,
            op.name.profile()
        );
    }
    s
}

/// Parses one file's policies into `set`, giving each an id `<file>#<n>` and remembering its
/// line.
fn add_file(
    set: &mut PolicySet,
    sources: &mut HashMap<PolicyId, Source>,
    file: &str,
    text: &str,
) -> Result<(), PolicyError> {
    let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::PolicySyntax {
        file: file.to_owned(),
        line: first_label_line(text, &e).unwrap_or(1),
        message: one_line(&e.to_string()),
    })?;
    if let Some(t) = parsed.templates().next() {
        return Err(PolicyError::PolicyInvalid {
            file: file.to_owned(),
            line: policy_line(text, &t.to_string()),
            message: "templates (`?principal`, `?resource`) are not supported".into(),
        });
    }
    let mut policies: Vec<&Policy> = parsed.policies().collect();
    // `from_str` numbers policies in source order as `policy0`, `policy1`, …
    policies.sort_by_key(|p| {
        AsRef::<str>::as_ref(p.id())
            .strip_prefix("policy")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    for (n, policy) in policies.into_iter().enumerate() {
        let label = policy.annotation("id").map(str::to_owned);
        let id = match &label {
            Some(l) if file == "built-in guardrails" => PolicyId::new(l),
            _ => PolicyId::new(format!("{file}#{n}")),
        };
        let line = policy_line(text, &policy.to_string());
        sources.insert(
            id.clone(),
            Source {
                file: file.to_owned(),
                line,
                label,
            },
        );
        set.add(policy.new_id(id))
            .map_err(|e| PolicyError::PolicyInvalid {
                file: file.to_owned(),
                line,
                message: one_line(&e.to_string()),
            })?;
    }
    Ok(())
}

/// The line where a policy's text starts in its file (the parser keeps each policy's source).
fn policy_line(file_text: &str, policy_text: &str) -> usize {
    file_text
        .find(policy_text.trim())
        .map_or(1, |offset| line_at(file_text, offset))
}

/// Where a validation error points: its first label's line in the policy's file, or else the
/// policy's first line.
fn locate(
    sources: &HashMap<PolicyId, Source>,
    texts: &HashMap<String, String>,
    id: &PolicyId,
    e: &dyn miette::Diagnostic,
) -> (String, usize) {
    let Some(source) = sources.get(id) else {
        return (id.to_string(), 1);
    };
    let line = texts
        .get(&source.file)
        .and_then(|text| first_label_line(text, e))
        .unwrap_or(source.line);
    (source.file.clone(), line)
}

fn first_label_line(text: &str, e: &dyn miette::Diagnostic) -> Option<usize> {
    let offset = e.labels()?.next()?.offset();
    Some(line_at(text, offset))
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .get(..offset.min(text.len()))
        .map_or(1, |b| b.iter().filter(|&&c| c == b'\n').count() + 1)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads every `*.cedar` file of `dir`, sorted by name.
fn read_cedar_files(dir: &Path) -> Result<Vec<(PathBuf, String)>, PolicyError> {
    crate::catalog::read_files_with_extension(dir, "cedar").map_err(|e| match e {
        crate::catalog::ReadError::Dir(source) => PolicyError::PolicyDir {
            dir: dir.to_owned(),
            source,
        },
        crate::catalog::ReadError::File(file, source) => PolicyError::PolicyFile { file, source },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parses_and_names_every_operation() {
        let catalog = Catalog::builtin().unwrap();
        let a = Authorizer::new(&catalog, None).unwrap();
        assert!(a.schema_text().contains(
            "action \"railway:volume.delete\" in [\"class:destructive\", \"profile:railway\"]"
        ));
        assert!(
            a.schema_text()
                .contains("action \"github:unknown\" in [\"class:destructive\"")
        );
    }

    #[test]
    fn lines() {
        assert_eq!(line_at("a\nb\nc", 0), 1);
        assert_eq!(line_at("a\nb\nc", 2), 2);
        assert_eq!(line_at("a\nb\nc", 99), 3);
        assert_eq!(
            policy_line(
                "// x\n\npermit(principal, action, resource);",
                "permit(principal, action, resource);"
            ),
            3
        );
    }
}

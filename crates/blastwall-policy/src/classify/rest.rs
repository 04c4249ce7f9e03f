//! REST classification: the most specific route for the method and the normalized path.

use std::cmp::Ordering;

use crate::catalog::route::Route;
use crate::catalog::{Profile, RestRules};
use crate::classify::Collector;
use crate::normalize::NormalizedPath;

/// Adds the operation of the best route, or `<profile>:unknown`.
pub(super) fn classify(
    profile: &Profile,
    rules: &RestRules,
    method: &str,
    path: &NormalizedPath,
    out: &mut Collector,
) {
    let segments: Vec<&str> = path.segments.iter().map(String::as_str).collect();
    match best_route(rules, method, &segments).and_then(|r| profile.op_at(r.op)) {
        Some(def) => out.add(&def.name, def.class),
        None => out.unknown(profile, method),
    }
}

/// The most specific route matching `method` and `segments`. A `GET` route also serves `HEAD`;
/// an exact `HEAD` route beats it at equal specificity.
pub(crate) fn best_route<'r>(
    rules: &'r RestRules,
    method: &str,
    segments: &[&str],
) -> Option<&'r Route> {
    let mut best: Option<(&Route, bool)> = None;
    for route in &rules.routes {
        let exact = route.method == method;
        if !(exact || method == "HEAD" && route.method == "GET") {
            continue;
        }
        if !route.template.matches(segments) {
            continue;
        }
        let better = match best {
            None => true,
            Some((b, b_exact)) => match route.template.specificity_cmp(&b.template) {
                Ordering::Greater => true,
                Ordering::Equal => exact && !b_exact,
                Ordering::Less => false,
            },
        };
        if better {
            best = Some((route, exact));
        }
    }
    best.map(|(r, _)| r)
}

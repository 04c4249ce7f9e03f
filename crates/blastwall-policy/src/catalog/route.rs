//! REST route templates: `METHOD /literal/{param}/**`, and matching them against normalized
//! path segments.

use std::cmp::Ordering;

use crate::catalog::PathCase;

/// One route of a REST profile: a method, a path template, and the operation it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    /// Upper-case method (`GET`, `DELETE`, `PURGE`).
    pub(crate) method: String,
    pub(crate) template: Template,
    /// Index of the operation in the profile.
    pub(crate) op: usize,
}

/// A path template: literal segments, `{name}` segments (exactly one segment), and an optional
/// final `**` (any number of further segments, zero included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    segments: Vec<Seg>,
    tail: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// Stored lower-cased when the profile is case-insensitive.
    Literal(String),
    Param,
}

/// Parses `METHOD /path/template` into its method and template.
pub(crate) fn parse_route(text: &str, case: PathCase) -> Result<(String, Template), String> {
    let (method, path) = text.split_once(' ').ok_or_else(|| {
        format!("route `{text}` needs a method and a path, e.g. `DELETE /repos/{{owner}}/{{repo}}`")
    })?;
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "route `{text}`: the method `{method}` must be upper-case letters, e.g. `GET`"
        ));
    }
    let template =
        Template::parse(path.trim(), case).map_err(|e| format!("route `{text}`: {e}"))?;
    Ok((method.to_owned(), template))
}

impl Template {
    /// Parses a path template. It starts with `/`; each segment is a literal, `{name}`, or
    /// (last only) `**`.
    pub(crate) fn parse(path: &str, case: PathCase) -> Result<Self, String> {
        let Some(rest) = path.strip_prefix('/') else {
            return Err("the path must start with `/`".into());
        };
        let mut segments = Vec::new();
        let mut tail = false;
        if rest.is_empty() {
            return Ok(Self { segments, tail });
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            if part == "**" {
                if i + 1 != count {
                    return Err("`**` may only be the last segment".into());
                }
                tail = true;
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    return Err(format!(
                        "bad parameter segment `{part}`: write it as `{{name}}`"
                    ));
                }
                segments.push(Seg::Param);
            } else {
                if part.is_empty() || part == "." || part == ".." {
                    return Err(format!(
                        "empty, `.` or `..` segment in `{path}`: templates match normalized paths"
                    ));
                }
                if part.contains(['{', '}', '*', '%', '?', '#']) {
                    return Err(format!(
                        "segment `{part}` mixes a literal with `{{`, `}}`, `*`, `%`, `?` or `#`: a segment is a literal, `{{name}}` or a final `**`"
                    ));
                }
                segments.push(Seg::Literal(match case {
                    PathCase::Sensitive => part.to_owned(),
                    PathCase::Insensitive => part.to_ascii_lowercase(),
                }));
            }
        }
        Ok(Self { segments, tail })
    }

    /// Whether the template matches these (normalized, decoded) path segments. For a
    /// case-insensitive profile the caller passes lower-cased segments.
    pub(crate) fn matches(&self, path: &[&str]) -> bool {
        if path.len() < self.segments.len() || (!self.tail && path.len() != self.segments.len()) {
            return false;
        }
        self.segments.iter().zip(path).all(|(seg, part)| match seg {
            Seg::Literal(l) => l == part,
            Seg::Param => !part.is_empty(),
        })
    }

    /// A key that orders templates by specificity: compare segment by segment, a literal beats a
    /// parameter beats the `**` tail; a template without a tail beats one with it.
    fn rank(&self) -> impl Iterator<Item = u8> + '_ {
        self.segments
            .iter()
            .map(|s| match s {
                Seg::Literal(_) => 2,
                Seg::Param => 1,
            })
            .chain(std::iter::once(if self.tail { 0 } else { 3 }))
    }

    /// Compares specificity: `Greater` means `self` is more specific.
    pub(crate) fn specificity_cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(other.rank())
    }

    /// A key equal for two templates that match exactly the same paths.
    pub(crate) fn shape(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            match s {
                Seg::Literal(l) => out.push_str(l),
                Seg::Param => out.push_str("{}"),
            }
        }
        if self.tail {
            out.push_str("/**");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Template {
        Template::parse(s, PathCase::Sensitive).unwrap()
    }

    #[test]
    fn matching() {
        assert!(t("/repos/{o}/{r}").matches(&["repos", "a", "b"]));
        assert!(!t("/repos/{o}/{r}").matches(&["repos", "a"]));
        assert!(!t("/repos/{o}/{r}").matches(&["repos", "a", "b", "c"]));
        assert!(t("/**").matches(&[]));
        assert!(t("/**").matches(&["a", "b"]));
        assert!(t("/a/**").matches(&["a"]));
        assert!(!t("/a/**").matches(&["b"]));
        assert!(t("/").matches(&[]));
    }

    #[test]
    fn specificity() {
        let order = ["/a/b", "/a/{x}", "/a/**", "/**"];
        for w in order.windows(2) {
            assert_eq!(
                t(w[0]).specificity_cmp(&t(w[1])),
                Ordering::Greater,
                "{} vs {}",
                w[0],
                w[1]
            );
        }
        assert_eq!(
            t("/r/{o}/{r}/git/refs/**").specificity_cmp(&t("/r/{o}/{r}/**")),
            Ordering::Greater
        );
    }

    #[test]
    fn bad_templates() {
        for bad in ["a", "/a/**/b", "/a//b", "/a/./b", "/{}", "/a{b}", "/a%2F"] {
            assert!(Template::parse(bad, PathCase::Sensitive).is_err(), "{bad}");
        }
        for bad in ["get /", "GET", " /", "GET a"] {
            assert!(parse_route(bad, PathCase::Sensitive).is_err(), "{bad}");
        }
    }
}

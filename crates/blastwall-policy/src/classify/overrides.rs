//! `_method` parameters: frameworks that run a POST as the method a parameter names (Laravel and
//! Symfony from the query string, a form body or a JSON body; Rails from a form body). A request
//! carrying one is refused, as the method-override headers are: the gateway cannot know whether
//! the upstream honours it, and classifying it by its real method would let a DELETE through as a
//! write.
//!
//! Names are compared the way PHP reads them: leading spaces dropped, and ` `, `.` and `[` turned
//! into `_` (so `.method` is `_method` to a PHP server), in any case.

use serde::de::{self, IgnoredAny, MapAccess, Visitor};

use crate::error::ClassifyError;

/// Refuses a request whose query string, form body (`application/x-www-form-urlencoded`,
/// `multipart/form-data`) or, when `json` is set, top-level JSON object names a `_method`
/// parameter.
pub(super) fn refuse_method_parameter(
    query: Option<&str>,
    content_types: &[&[u8]],
    body: &[u8],
    json: bool,
) -> Result<(), ClassifyError> {
    if let Some(q) = query
        && form_names_method(q.as_bytes())
    {
        return Err(ClassifyError::MethodParameter {
            place: "query parameter",
        });
    }
    if body.is_empty() {
        return Ok(());
    }
    let essence = |ct: &&[u8]| {
        let e = ct.split(|&b| b == b';').next().unwrap_or_default();
        e.trim_ascii().to_ascii_lowercase()
    };
    for ct in content_types.iter().map(essence) {
        if ct == b"application/x-www-form-urlencoded" && form_names_method(body) {
            return Err(ClassifyError::MethodParameter {
                place: "form field",
            });
        }
        if ct.starts_with(b"multipart/") && multipart_names_method(body) {
            return Err(ClassifyError::MethodParameter {
                place: "multipart form field",
            });
        }
    }
    // A JSON object at the top of the body, whatever the content type claims (a server may sniff
    // it): look at its keys only when the body starts like one.
    if json && body.trim_ascii_start().first() == Some(&b'{') && json_names_method(body) {
        return Err(ClassifyError::MethodParameter {
            place: "key of the JSON body",
        });
    }
    Ok(())
}

/// Whether `name`, read as PHP reads a parameter name, is `_method` (in any case).
fn is_method_name(name: &[u8]) -> bool {
    let name = name.trim_ascii_start();
    name.len() == 7
        && name
            .iter()
            .zip(b"_method")
            .enumerate()
            .all(|(i, (&b, &m))| {
                let b = if i == 0 && matches!(b, b' ' | b'.' | b'[') {
                    b'_'
                } else {
                    b
                };
                b.eq_ignore_ascii_case(&m)
            })
}

/// Whether form-encoded text (a query string or a form body) has a `_method` key. `;` is taken
/// as a separator too, as some servers do.
fn form_names_method(text: &[u8]) -> bool {
    text.split(|&b| b == b';')
        .flat_map(form_urlencoded::parse)
        .any(|(k, _)| is_method_name(k.as_bytes()))
}

/// Whether a multipart body has a part whose `Content-Disposition` mentions `method` at all (in
/// any case or encoding: `name="_method"`, `name*=…`); refusing a rare false positive is cheaper
/// than parsing every way a server reads those headers.
fn multipart_names_method(body: &[u8]) -> bool {
    body.split(|&b| b == b'\n').any(|line| {
        let line = line.trim_ascii_start();
        let lower = line.to_ascii_lowercase();
        lower.starts_with(b"content-disposition")
            && (memchr_lower(&lower, b"method") || lower.contains(&b'%'))
    })
}

fn memchr_lower(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether the body is a JSON object with a `_method` key at its top level. A body that is not
/// JSON is not this check's business.
fn json_names_method(body: &[u8]) -> bool {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            let mut found = false;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                found |= is_method_name(key.as_bytes());
                map.next_value::<IgnoredAny>()?;
            }
            Ok(found)
        }
    }
    struct Top;
    impl<'de> de::DeserializeSeed<'de> for Top {
        type Value = bool;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_map(Keys)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    de::DeserializeSeed::deserialize(Top, &mut de).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(query: Option<&str>, ct: &str, body: &str) -> bool {
        refuse_method_parameter(query, &[ct.as_bytes()], body.as_bytes(), true).is_err()
    }

    #[test]
    fn method_parameters_are_refused_wherever_a_framework_reads_them() {
        assert!(refused(Some("_method=DELETE"), "", ""));
        assert!(refused(Some("a=1&_METHOD=delete"), "", ""));
        assert!(refused(Some("%5Fmethod=DELETE"), "", ""));
        assert!(refused(Some(".method=DELETE"), "", ""));
        assert!(refused(Some("a=1;_method=DELETE"), "", ""));
        let form = "application/x-www-form-urlencoded; charset=utf-8";
        assert!(refused(None, form, "name=x&_method=DELETE"));
        assert!(refused(None, form, "_m%65thod=DELETE"));
        let multipart = "multipart/form-data; boundary=b";
        assert!(refused(
            None,
            multipart,
            "--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--\r\n"
        ));
        assert!(refused(
            None,
            multipart,
            "--b\r\ncontent-disposition: form-data; name*=UTF-8''%5Fm%65thod\r\n\r\nDELETE\r\n--b--"
        ));
        assert!(refused(
            None,
            "application/json",
            r#"{"a":1,"_method":"DELETE"}"#
        ));
        assert!(refused(None, "text/plain", r#" {"\u005fmethod":"DELETE"}"#));
    }

    #[test]
    fn ordinary_requests_pass() {
        assert!(!refused(Some("method=x&a_method=y&_methods=z"), "", ""));
        assert!(!refused(
            None,
            "application/json",
            r#"{"name":"_method","nested":{"_method":1}}"#
        ));
        assert!(!refused(None, "application/json", "not json {"));
        assert!(!refused(
            None,
            "application/x-www-form-urlencoded",
            "method=DELETE"
        ));
        assert!(!refused(
            None,
            "multipart/form-data; boundary=b",
            "--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n_method\r\n--b--"
        ));
        assert!(!refused(None, "application/octet-stream", "_method=DELETE"));
    }
}

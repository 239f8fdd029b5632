//! Telling the two wire protocols apart and decoding a request into its action and parameters.
//!
//! JSON 1.0: `X-Amz-Target: AmazonSQS.<Action>` and/or `Content-Type: application/x-amz-json-1.0`,
//! a JSON object body. Query: anything else, with `Action=<Action>` and the other parameters in the
//! query string and/or a form-encoded body (GET or POST, to `/` or to a queue URL).

use std::collections::BTreeMap;

use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use ferry_types::{ErrorCode, FerryError};
use percent_encoding::percent_decode;

use crate::action::Action;
use crate::params::{shown, Params};

const TARGET_HEADER: &str = "x-amz-target";
const TARGET_PREFIX: &str = "AmazonSQS.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Json,
    Query,
}

impl Protocol {
    /// Decided from the headers alone, so that even a request whose body cannot be read gets its
    /// error in the format its client parses.
    pub fn detect(headers: &HeaderMap) -> Self {
        let json_content = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                value
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/x-amz-json")
            });
        if json_content || headers.contains_key(TARGET_HEADER) {
            Self::Json
        } else {
            Self::Query
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Query => "query",
        }
    }
}

/// The action a request names and its parameters.
pub fn decode(
    protocol: Protocol,
    parts: &Parts,
    body: &[u8],
) -> Result<(Action, Params), FerryError> {
    if parts.method != Method::GET && parts.method != Method::POST {
        return Err(FerryError::new(
            ErrorCode::InvalidAction,
            format!("The HTTP method {} is not supported.", parts.method),
        ));
    }
    match protocol {
        Protocol::Json => decode_json(&parts.headers, body),
        Protocol::Query => decode_query(parts.uri.query().unwrap_or(""), body),
    }
}

fn decode_json(headers: &HeaderMap, body: &[u8]) -> Result<(Action, Params), FerryError> {
    let target = headers
        .get(TARGET_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let action = target
        .strip_prefix(TARGET_PREFIX)
        .and_then(Action::parse)
        .ok_or_else(|| {
            FerryError::new(
                ErrorCode::InvalidAction,
                format!(
                    "The operation in X-Amz-Target '{}' is not valid for this endpoint.",
                    shown(target)
                ),
            )
        })?;
    let malformed = |reason: String| FerryError::new(ErrorCode::MalformedRequest, reason);
    let params = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice(body) {
            Ok(serde_json::Value::Object(object)) => object,
            Ok(_) => return Err(malformed("The request body must be a JSON object.".into())),
            Err(error) => {
                return Err(malformed(format!(
                    "The request body is not valid JSON: {error}."
                )))
            }
        }
    };
    Ok((action, Params::Json(params)))
}

fn decode_query(query_string: &str, body: &[u8]) -> Result<(Action, Params), FerryError> {
    let mut pairs = BTreeMap::new();
    // The body wins over the query string when both carry a parameter.
    for source in [query_string.as_bytes(), body] {
        for (name, value) in form_pairs(source)? {
            pairs.insert(name, value);
        }
    }
    let name = pairs.remove("Action").ok_or_else(|| {
        FerryError::new(
            ErrorCode::InvalidAction,
            "The request must contain the parameter Action.",
        )
    })?;
    let action = Action::parse(&name).ok_or_else(|| {
        FerryError::new(
            ErrorCode::InvalidAction,
            format!(
                "The action {} is not valid for this endpoint.",
                shown(&name)
            ),
        )
    })?;
    Ok((action, Params::Query(pairs)))
}

/// `application/x-www-form-urlencoded` pairs. Unlike lenient decoders this refuses bytes that are
/// not UTF-8 instead of replacing them, so a body never changes silently.
pub fn form_pairs(input: &[u8]) -> Result<Vec<(String, String)>, FerryError> {
    input
        .split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            Ok((form_decode(name)?, form_decode(value)?))
        })
        .collect()
}

fn form_decode(encoded: &[u8]) -> Result<String, FerryError> {
    let spaced: Vec<u8> = encoded
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_decode(&spaced)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| {
            FerryError::new(
                ErrorCode::MalformedRequest,
                "The request parameters are not valid UTF-8.",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = axum::http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_protocol_follows_the_target_and_content_type() {
        let json = parts(
            "POST",
            "/",
            &[
                ("content-type", "application/x-amz-json-1.0"),
                ("x-amz-target", "AmazonSQS.ListQueues"),
            ],
        );
        assert_eq!(Protocol::detect(&json.headers), Protocol::Json);
        let charset = parts(
            "POST",
            "/",
            &[("content-type", "application/x-amz-json-1.0; charset=utf-8")],
        );
        assert_eq!(Protocol::detect(&charset.headers), Protocol::Json);
        let form = parts(
            "POST",
            "/",
            &[(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
        );
        assert_eq!(Protocol::detect(&form.headers), Protocol::Query);
        assert_eq!(
            Protocol::detect(&parts("GET", "/?Action=ListQueues", &[]).headers),
            Protocol::Query
        );
    }

    #[test]
    fn json_requests_name_their_action_in_the_target() {
        let request = parts("POST", "/", &[("x-amz-target", "AmazonSQS.GetQueueUrl")]);
        let (action, params) = decode(Protocol::Json, &request, br#"{"QueueName":"q"}"#).unwrap();
        assert_eq!(action, Action::GetQueueUrl);
        assert_eq!(params.required("QueueName").unwrap(), "q");
        let (_, empty) = decode(Protocol::Json, &request, b"").unwrap();
        assert_eq!(empty.string("QueueName").unwrap(), None);

        for (body, code) in [
            (&b"{not json"[..], ErrorCode::MalformedRequest),
            (&b"[1]"[..], ErrorCode::MalformedRequest),
        ] {
            assert_eq!(
                decode(Protocol::Json, &request, body).err().unwrap().code,
                code
            );
        }
        let unknown = parts("POST", "/", &[("x-amz-target", "AmazonSQS.Frobnicate")]);
        assert_eq!(
            decode(Protocol::Json, &unknown, b"{}").err().unwrap().code,
            ErrorCode::InvalidAction
        );
        let foreign = parts(
            "POST",
            "/",
            &[("x-amz-target", "DynamoDB_20120810.ListTables")],
        );
        assert_eq!(
            decode(Protocol::Json, &foreign, b"{}").err().unwrap().code,
            ErrorCode::InvalidAction
        );
    }

    #[test]
    fn query_requests_merge_the_query_string_and_the_form_body() {
        let request = parts(
            "POST",
            "/000000000000/q?Action=SendMessage&Version=2012-11-05",
            &[],
        );
        let (action, params) = decode(
            Protocol::Query,
            &request,
            b"MessageBody=hello+world%2F%E2%9C%93%0D%0A&DelaySeconds=5",
        )
        .unwrap();
        assert_eq!(action, Action::SendMessage);
        assert_eq!(
            params.required("MessageBody").unwrap(),
            "hello world/\u{2713}\r\n"
        );
        assert_eq!(params.integer("DelaySeconds").unwrap(), Some(5));

        let get = parts("GET", "/?Action=ListQueues&QueueNamePrefix=a%2Bb", &[]);
        let (action, params) = decode(Protocol::Query, &get, b"").unwrap();
        assert_eq!(action, Action::ListQueues);
        assert_eq!(
            params.string("QueueNamePrefix").unwrap().as_deref(),
            Some("a+b")
        );
    }

    #[test]
    fn query_requests_without_a_known_action_or_with_bad_bytes_are_refused() {
        let request = parts("POST", "/", &[]);
        for (body, code) in [
            (&b"QueueName=q"[..], ErrorCode::InvalidAction),
            (&b"Action=DescribeEverything"[..], ErrorCode::InvalidAction),
            (&b"Action=sendmessage"[..], ErrorCode::InvalidAction),
            (
                &b"Action=SendMessage&MessageBody=%FF%FE"[..],
                ErrorCode::MalformedRequest,
            ),
        ] {
            assert_eq!(
                decode(Protocol::Query, &request, body).err().unwrap().code,
                code,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let put = parts("PUT", "/?Action=ListQueues", &[]);
        assert_eq!(
            decode(Protocol::Query, &put, b"").err().unwrap().code,
            ErrorCode::InvalidAction
        );
    }
}

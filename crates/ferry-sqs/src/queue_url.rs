//! Queue URLs: `<base>/<account>/<queue>`. Any node accepts any queue's URL, whatever its host, so
//! only the last two path segments matter; URLs come back with the configured base or the
//! request's own host.

use axum::http::HeaderMap;
use ferry_types::{ErrorCode, FerryError};
use percent_encoding::percent_decode_str;

use crate::params::shown;

/// The queue a QueueUrl (`http://host/<account>/<name>`, or just its path) names. Earlier path
/// segments are ignored, so LocalStack-style `/queue/<region>/<account>/<name>` URLs work too.
pub fn queue_name(url: &str, account_id: &str) -> Result<String, FerryError> {
    let invalid = || {
        FerryError::new(
            ErrorCode::InvalidAddress,
            format!("The address {} is not valid for this endpoint.", shown(url)),
        )
    };
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map(|slash| &rest[slash..]).unwrap_or(""),
        None if url.starts_with('/') => url,
        None => return Err(invalid()),
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let (account, name) = queue_path(path).ok_or_else(invalid)?;
    if account != account_id {
        return Err(FerryError::queue_does_not_exist());
    }
    Ok(name)
}

/// The (account, queue name) of a path that ends in `/<account>/<name>`.
pub fn queue_path(path: &str) -> Option<(String, String)> {
    let mut segments = path.rsplit('/').filter(|segment| !segment.is_empty());
    let name = segments.next()?;
    let account = segments.next()?;
    let decode = |segment: &str| {
        percent_decode_str(segment)
            .decode_utf8()
            .ok()
            .map(|text| text.into_owned())
    };
    Some((decode(account)?, decode(name)?))
}

/// Builds queue URLs for one response.
pub struct UrlBuilder {
    base: String,
    account_id: String,
}

impl UrlBuilder {
    /// Uses `advertised` if configured, else `http(s)://<Host header>` (the scheme from
    /// `X-Forwarded-Proto` when a proxy in front says https).
    pub fn new(advertised: Option<&str>, headers: &HeaderMap, account_id: &str) -> Self {
        let base = match advertised {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => {
                let host = headers
                    .get(axum::http::header::HOST)
                    .and_then(|value| value.to_str().ok())
                    .filter(|host| is_plain_authority(host))
                    .unwrap_or("localhost");
                let scheme = match headers
                    .get("x-forwarded-proto")
                    .and_then(|value| value.to_str().ok())
                {
                    Some(proto) if proto.eq_ignore_ascii_case("https") => "https",
                    _ => "http",
                };
                format!("{scheme}://{host}")
            }
        };
        Self {
            base,
            account_id: account_id.to_owned(),
        }
    }

    pub fn url(&self, queue: &str) -> String {
        format!("{}/{}/{queue}", self.base, self.account_id)
    }
}

/// A Host header that is just `host[:port]`, so reflecting it cannot inject anything into a URL.
fn is_plain_authority(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "000000000000";

    #[test]
    fn any_host_and_url_style_names_the_queue() {
        for url in [
            "http://127.0.0.1:9324/000000000000/orders",
            "https://sqs.us-east-1.amazonaws.com/000000000000/orders",
            "http://localhost:4566/queue/us-east-1/000000000000/orders",
            "/000000000000/orders",
            "http://h/000000000000/orders/",
            "http://h/000000000000/orders?x=1",
        ] {
            assert_eq!(queue_name(url, ACCOUNT).unwrap(), "orders", "{url}");
        }
    }

    #[test]
    fn other_accounts_and_non_urls_are_refused() {
        assert_eq!(
            queue_name("http://h/123456789012/orders", ACCOUNT)
                .unwrap_err()
                .code,
            ErrorCode::QueueDoesNotExist
        );
        for url in ["orders", "http://h/orders", "http://h", ""] {
            assert_eq!(
                queue_name(url, ACCOUNT).unwrap_err().code,
                ErrorCode::InvalidAddress,
                "{url}"
            );
        }
    }

    #[test]
    fn urls_use_the_advertised_base_or_the_host_header() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "node-2:9325".parse().unwrap());
        let reflected = UrlBuilder::new(None, &headers, ACCOUNT);
        assert_eq!(reflected.url("q"), "http://node-2:9325/000000000000/q");
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(
            UrlBuilder::new(None, &headers, ACCOUNT).url("q"),
            "https://node-2:9325/000000000000/q"
        );
        let advertised = UrlBuilder::new(Some("https://sqs.example.com/"), &headers, ACCOUNT);
        assert_eq!(
            advertised.url("q"),
            "https://sqs.example.com/000000000000/q"
        );
        headers.insert("host", "evil.com/<x>".parse().unwrap());
        assert_eq!(
            UrlBuilder::new(None, &headers, ACCOUNT).url("q"),
            "https://localhost/000000000000/q"
        );
    }
}

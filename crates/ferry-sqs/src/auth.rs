//! Who is calling: SigV4 (`Authorization: AWS4-HMAC-SHA256 ...`) in one of three modes.
//!
//! - `Off`: signatures are ignored; every caller is anonymous.
//! - `Parse`: the access key is read from the signature's credential scope and becomes the
//!   caller's identity (the SenderId of what it sends); nothing is checked, any secret works.
//! - `Verify`: the signature must be valid for a configured access key, within the allowed clock
//!   skew, and the key's account must be the cluster's. Presigned (query-string) signatures are not
//!   accepted.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ferry_types::{ErrorCode, FerryError};
use hmac::{Hmac, Mac};
use percent_encoding::percent_decode;
use sha2::{Digest, Sha256};

use crate::params::shown;

type HmacSha256 = Hmac<Sha256>;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "sqs";
const TERMINATOR: &str = "aws4_request";
const DATE_HEADER: &str = "x-amz-date";

#[derive(Debug, Clone)]
pub enum AuthMode {
    Off,
    Parse,
    Verify(Credentials),
}

/// The access keys accepted in verify mode.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    keys: BTreeMap<String, Credential>,
}

impl Credentials {
    pub fn new(keys: BTreeMap<String, Credential>) -> Self {
        Self { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Clone)]
pub struct Credential {
    pub secret_access_key: String,
    /// The account the key belongs to; the cluster's own account if unset.
    pub account_id: Option<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("secret_access_key", &"<redacted>")
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// The caller of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub access_key: Option<String>,
}

/// What authentication needs to know besides the request.
pub struct Check<'a> {
    pub mode: &'a AuthMode,
    pub max_clock_skew: Duration,
    pub account_id: &'a str,
    /// Seconds since the Unix epoch.
    pub now: u64,
}

impl Check<'_> {
    pub fn caller(&self, parts: &Parts, body: &[u8]) -> Result<Caller, FerryError> {
        match self.mode {
            AuthMode::Off => Ok(Caller::default()),
            AuthMode::Parse => Ok(Caller {
                access_key: authorization(&parts.headers)
                    .ok()
                    .map(|auth| auth.access_key.to_owned()),
            }),
            AuthMode::Verify(credentials) => self.verify(credentials, parts, body),
        }
    }

    fn verify(
        &self,
        credentials: &Credentials,
        parts: &Parts,
        body: &[u8],
    ) -> Result<Caller, FerryError> {
        let auth = authorization(&parts.headers)?;
        let credential = credentials.keys.get(auth.access_key).ok_or_else(|| {
            FerryError::new(
                ErrorCode::InvalidClientTokenId,
                "The security token included in the request is invalid.",
            )
        })?;
        let amz_date = parts
            .headers
            .get(DATE_HEADER)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| insecure("The request must carry an X-Amz-Date header."))?;
        let signed_at = parse_amz_date(amz_date).ok_or_else(|| {
            insecure("The X-Amz-Date header is not of the form YYYYMMDDTHHMMSSZ.")
        })?;
        self.check_skew(amz_date, signed_at)?;
        check_scope(&auth, amz_date)?;
        if !auth.signed_headers.split(';').any(|name| name == "host") {
            return Err(insecure(
                "'Host' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        let canonical = canonical_request(
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query().unwrap_or(""),
            &parts.headers,
            auth.signed_headers,
            &hex::encode(Sha256::digest(body)),
        );
        let scope = format!("{}/{}/{SERVICE}/{TERMINATOR}", auth.date, auth.region);
        let to_sign = string_to_sign(amz_date, &scope, &canonical);
        let key = signing_key(
            &credential.secret_access_key,
            auth.date,
            auth.region,
            SERVICE,
        );
        let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC takes keys of any length");
        mac.update(to_sign.as_bytes());
        let provided = hex::decode(auth.signature).unwrap_or_default();
        if mac.verify_slice(&provided).is_err() {
            return Err(FerryError::new(
                ErrorCode::SignatureDoesNotMatch,
                format!(
                    "The request signature we calculated does not match the signature you provided. \
                     Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\n\
                     The Canonical String for this request should have been\n'{canonical}'\n\n\
                     The String-to-Sign should have been\n'{to_sign}'\n"
                ),
            ));
        }
        let account = credential.account_id.as_deref().unwrap_or(self.account_id);
        if account != self.account_id {
            return Err(FerryError::new(
                ErrorCode::AccessDenied,
                format!(
                    "Access to the resource is denied: access key {} belongs to account {account}, \
                     and this endpoint serves the queues of account {}.",
                    auth.access_key, self.account_id
                ),
            ));
        }
        Ok(Caller {
            access_key: Some(auth.access_key.to_owned()),
        })
    }

    fn check_skew(&self, amz_date: &str, signed_at: u64) -> Result<(), FerryError> {
        let skew = self.max_clock_skew.as_secs();
        let minutes = skew / 60;
        if signed_at + skew < self.now {
            return Err(FerryError::new(
                ErrorCode::RequestExpired,
                format!(
                    "Signature expired: {amz_date} is now earlier than {} ({} - {minutes} min.)",
                    format_amz_date(self.now - skew),
                    format_amz_date(self.now)
                ),
            ));
        }
        if signed_at > self.now + skew {
            return Err(FerryError::new(
                ErrorCode::RequestExpired,
                format!(
                    "Signature not yet current: {amz_date} is still later than {} ({} + {minutes} min.)",
                    format_amz_date(self.now + skew),
                    format_amz_date(self.now)
                ),
            ));
        }
        Ok(())
    }
}

fn insecure(reason: &str) -> FerryError {
    FerryError::new(ErrorCode::InvalidSecurity, reason)
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`
/// header.
#[derive(Debug)]
struct Authorization<'a> {
    access_key: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    terminator: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn authorization(headers: &HeaderMap) -> Result<Authorization<'_>, FerryError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| {
            insecure("The request was not signed with SigV4 (no Authorization header).")
        })?
        .to_str()
        .map_err(|_| insecure("The Authorization header is not ASCII."))?;
    let malformed = || {
        insecure(&format!(
            "The Authorization header is not a valid {ALGORITHM} signature: '{}'.",
            shown(value)
        ))
    };
    let (algorithm, fields) = value.trim().split_once(' ').ok_or_else(malformed)?;
    if algorithm != ALGORITHM {
        return Err(insecure(&format!(
            "Only {ALGORITHM} (SigV4) signatures are accepted, not '{}'.",
            shown(algorithm)
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for field in fields.split(',') {
        match field.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(malformed()),
        }
    }
    let mut scope = credential.ok_or_else(malformed)?.split('/');
    let mut next = || scope.next().filter(|part| !part.is_empty());
    let auth = Authorization {
        access_key: next().ok_or_else(malformed)?,
        date: next().ok_or_else(malformed)?,
        region: next().ok_or_else(malformed)?,
        service: next().ok_or_else(malformed)?,
        terminator: next().ok_or_else(malformed)?,
        signed_headers: signed_headers.ok_or_else(malformed)?,
        signature: signature.ok_or_else(malformed)?,
    };
    if next().is_some() {
        return Err(malformed());
    }
    Ok(auth)
}

fn check_scope(auth: &Authorization<'_>, amz_date: &str) -> Result<(), FerryError> {
    let mismatch = |message: String| FerryError::new(ErrorCode::SignatureDoesNotMatch, message);
    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(mismatch(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
            shown(auth.date),
            &amz_date[..8]
        )));
    }
    if auth.service != SERVICE {
        return Err(mismatch(format!(
            "Credential should be scoped to correct service: '{SERVICE}'."
        )));
    }
    if auth.terminator != TERMINATOR {
        return Err(mismatch(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{}'.",
            shown(auth.terminator)
        )));
    }
    Ok(())
}

/// The SigV4 canonical request of an HTTP request (non-S3 rules: the path is normalised and its
/// already-encoded form encoded once more).
fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    let mut canonical = format!(
        "{method}\n{}\n{}\n",
        canonical_uri(path),
        canonical_query(query)
    );
    for name in signed_headers.split(';') {
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|value| {
                String::from_utf8_lossy(value.as_bytes())
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        canonical.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    canonical.push_str(&format!("\n{signed_headers}\n{payload_hash}"));
    canonical
}

fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut normalised = format!("/{}", segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        normalised.push('/');
    }
    uri_encode(normalised.as_bytes(), false)
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let encode = |part: &str| {
                let raw: Vec<u8> = percent_decode(part.as_bytes()).collect();
                uri_encode(&raw, true)
            };
            (encode(name), encode(value))
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// SigV4 URI encoding: unreserved characters stay, everything else is `%XY` (upper case).
fn uri_encode(bytes: &[u8], encode_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (b == b'/' && !encode_slash) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let date_key = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let region_key = hmac(&date_key, region.as_bytes());
    let service_key = hmac(&region_key, service.as_bytes());
    hmac(&service_key, TERMINATOR.as_bytes())
}

/// `YYYYMMDDTHHMMSSZ` as seconds since the Unix epoch.
fn parse_amz_date(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    if bytes.len() != 16 || bytes[8] != b'T' || bytes[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())
            .flatten()
    };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn format_amz_date(seconds: u64) -> String {
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let time = seconds % 86_400;
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        time / 3_600,
        time / 60 % 60,
        time % 60
    )
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm); `None` before
/// the epoch.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let year = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).checked_sub(719_468)
}

fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The AWS SigV4 test suite's credentials and time.
    const ACCESS_KEY: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const AMZ_DATE: &str = "20150830T123600Z";
    const SIGNED_AT: u64 = 1_440_938_160;
    const ACCOUNT: &str = "000000000000";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn suite_signature(method: &str, query: &str) -> String {
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert(DATE_HEADER, AMZ_DATE.parse().unwrap());
        let canonical = canonical_request(
            method,
            "/",
            query,
            &headers,
            "host;x-amz-date",
            EMPTY_SHA256,
        );
        let to_sign = string_to_sign(
            AMZ_DATE,
            "20150830/us-east-1/service/aws4_request",
            &canonical,
        );
        let key = signing_key(SECRET, "20150830", "us-east-1", "service");
        hex::encode(hmac(&key, to_sign.as_bytes()))
    }

    #[test]
    fn signatures_match_the_aws_test_suite() {
        // get-vanilla, post-vanilla and get-vanilla-query-order-key-case.
        assert_eq!(
            suite_signature("GET", ""),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(
            suite_signature("POST", ""),
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        assert_eq!(
            suite_signature("GET", "Param2=value2&Param1=value1"),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn canonical_forms_normalise_paths_and_queries() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(
            canonical_uri("/000000000000/q%20x"),
            "/000000000000/q%2520x"
        );
        assert_eq!(canonical_query("b=2&a=%7e+x&a=1&c"), "a=1&a=~%2Bx&b=2&c=");
    }

    #[test]
    fn amz_dates_round_trip() {
        assert_eq!(parse_amz_date(AMZ_DATE), Some(SIGNED_AT));
        assert_eq!(format_amz_date(SIGNED_AT), AMZ_DATE);
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(format_amz_date(951_782_400), "20000229T000000Z");
        for bad in [
            "20150830T123600",
            "2015-08-30T12:36",
            "20151330T123600Z",
            "2015083OT123600Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    /// A request signed as an SDK would sign it for SQS.
    fn signed(secret: &str, body: &[u8], amz_date: &str) -> Parts {
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1:9324".parse().unwrap());
        headers.insert(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        headers.insert(DATE_HEADER, amz_date.parse().unwrap());
        let signed_headers = "content-type;host;x-amz-date";
        let canonical = canonical_request(
            "POST",
            "/000000000000/q",
            "",
            &headers,
            signed_headers,
            &hex::encode(Sha256::digest(body)),
        );
        let date = &amz_date[..8];
        let scope = format!("{date}/us-east-1/sqs/aws4_request");
        let key = signing_key(secret, date, "us-east-1", "sqs");
        let signature = hex::encode(hmac(
            &key,
            string_to_sign(amz_date, &scope, &canonical).as_bytes(),
        ));
        let mut request = axum::http::Request::builder()
            .method("POST")
            .uri("/000000000000/q")
            .header(
                "authorization",
                format!("{ALGORITHM} Credential={ACCESS_KEY}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"),
            );
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn verify_mode(account_id: Option<&str>) -> AuthMode {
        let credential = Credential {
            secret_access_key: SECRET.to_owned(),
            account_id: account_id.map(str::to_owned),
        };
        AuthMode::Verify(Credentials::new(
            [(ACCESS_KEY.to_owned(), credential)].into(),
        ))
    }

    fn check(mode: &AuthMode, parts: &Parts, body: &[u8]) -> Result<Caller, FerryError> {
        Check {
            mode,
            max_clock_skew: Duration::from_secs(15 * 60),
            account_id: ACCOUNT,
            now: SIGNED_AT + 60,
        }
        .caller(parts, body)
    }

    const BODY: &[u8] = b"Action=SendMessage&MessageBody=hi";

    #[test]
    fn verify_accepts_a_correct_signature_and_names_the_caller() {
        let caller = check(&verify_mode(None), &signed(SECRET, BODY, AMZ_DATE), BODY).unwrap();
        assert_eq!(caller.access_key.as_deref(), Some(ACCESS_KEY));
    }

    #[test]
    fn verify_refuses_what_sigv4_would_refuse() {
        let mode = verify_mode(None);
        let code = |parts: &Parts, body: &[u8]| check(&mode, parts, body).unwrap_err().code;
        assert_eq!(
            code(&signed("wrong secret", BODY, AMZ_DATE), BODY),
            ErrorCode::SignatureDoesNotMatch
        );
        assert_eq!(
            code(
                &signed(SECRET, BODY, AMZ_DATE),
                b"Action=SendMessage&MessageBody=tampered"
            ),
            ErrorCode::SignatureDoesNotMatch
        );
        assert_eq!(
            code(&signed(SECRET, BODY, "20150830T120000Z"), BODY),
            ErrorCode::RequestExpired
        );
        assert_eq!(
            code(&signed(SECRET, BODY, "20150830T130000Z"), BODY),
            ErrorCode::RequestExpired
        );
        let unsigned = axum::http::Request::post("/")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(code(&unsigned, BODY), ErrorCode::InvalidSecurity);
        let sigv2 = axum::http::Request::post("/")
            .header("authorization", "AWS AKIDEXAMPLE:c2lnbmF0dXJl")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(code(&sigv2, BODY), ErrorCode::InvalidSecurity);

        let mut unknown_key = signed(SECRET, BODY, AMZ_DATE);
        let header = unknown_key.headers["authorization"]
            .to_str()
            .unwrap()
            .replace(ACCESS_KEY, "AKIDUNKNOWN");
        unknown_key
            .headers
            .insert("authorization", header.parse().unwrap());
        assert_eq!(code(&unknown_key, BODY), ErrorCode::InvalidClientTokenId);

        let other_account = verify_mode(Some("123456789012"));
        assert_eq!(
            check(&other_account, &signed(SECRET, BODY, AMZ_DATE), BODY)
                .unwrap_err()
                .code,
            ErrorCode::AccessDenied
        );
    }

    #[test]
    fn parse_mode_takes_the_access_key_without_checking() {
        let caller = check(
            &AuthMode::Parse,
            &signed("any secret", BODY, AMZ_DATE),
            b"other",
        )
        .unwrap();
        assert_eq!(caller.access_key.as_deref(), Some(ACCESS_KEY));
        let unsigned = axum::http::Request::post("/")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        assert_eq!(
            check(&AuthMode::Parse, &unsigned, BODY).unwrap(),
            Caller::default()
        );
        assert_eq!(
            check(&AuthMode::Off, &signed(SECRET, BODY, AMZ_DATE), BODY).unwrap(),
            Caller::default()
        );
    }
}

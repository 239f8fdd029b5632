//! The SQS-compatible HTTP endpoint: every SQS action in both wire protocols (AWS JSON 1.0 and the
//! legacy Query protocol with XML responses), translated onto the broker.
//!
//! A request goes: protocol detection (headers) → body (bounded) → authentication (SigV4 per
//! [`AuthMode`]) → decoding into a closed `Action` and its parameters → the broker → one result
//! tree rendered as JSON or XML. Errors at any step are rendered in the request's protocol through
//! the one table in `wire_error`.
//!
//! Rule: wire formats only. Validation of meaning (names, ranges, sizes) is the broker's; this crate
//! checks only that the wire is well formed, and never reaches past the broker.

mod action;
mod auth;
mod handlers;
mod output;
mod params;
mod protocol;
mod queue_url;
mod render;
mod wire_error;

#[cfg(test)]
mod compatibility;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Router;
use ferry_broker::Broker;
use ferry_types::{ErrorCode, FerryError};
use tracing::Instrument as _;

pub use auth::{AuthMode, Credential, Credentials};

use action::Action;
use output::Fields;
use protocol::Protocol;
use queue_url::UrlBuilder;
use wire_error::{wire_error, Fault};

/// The largest request body accepted. A 1 MiB message can triple in size when form-encoded, and
/// base64 adds a third to binary attributes; this leaves room for both and the other parameters.
const MAX_REQUEST_BYTES: usize = 4 << 20;

/// How the endpoint presents itself and authenticates callers.
#[derive(Debug, Clone)]
pub struct SqsConfig {
    /// Queue URLs are `<base>/<account>/<queue>`; without a base, each response uses
    /// `http://<the request's Host header>`.
    pub advertised_base_url: Option<String>,
    pub auth: AuthMode,
    /// How far a signature's X-Amz-Date may be from this node's clock in verify mode.
    pub max_clock_skew: Duration,
}

impl Default for SqsConfig {
    fn default() -> Self {
        Self {
            advertised_base_url: None,
            auth: AuthMode::Parse,
            max_clock_skew: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("SQS base URL {0:?} must start with http:// or https:// and have a host")]
    BaseUrl(String),
    #[error("SQS auth mode {0:?} is not one of off, parse, verify")]
    AuthMode(String),
    #[error("SQS auth mode verify needs at least one access key in the credentials")]
    NoCredentials,
}

impl SqsConfig {
    /// Checks the base URL and builds the auth mode named `auth` (`off`, `parse` or `verify`).
    pub fn new(
        advertised_base_url: Option<String>,
        auth: &str,
        credentials: Credentials,
    ) -> Result<Self, ConfigError> {
        if let Some(base) = &advertised_base_url {
            let host = base
                .strip_prefix("http://")
                .or_else(|| base.strip_prefix("https://"));
            if host.is_none_or(|host| host.trim_matches('/').is_empty()) {
                return Err(ConfigError::BaseUrl(base.clone()));
            }
        }
        let auth = match auth {
            "off" => AuthMode::Off,
            "parse" => AuthMode::Parse,
            "verify" if credentials.is_empty() => return Err(ConfigError::NoCredentials),
            "verify" => AuthMode::Verify(credentials),
            other => return Err(ConfigError::AuthMode(other.to_owned())),
        };
        Ok(Self {
            advertised_base_url,
            auth,
            ..Self::default()
        })
    }
}

struct Endpoint {
    broker: Arc<Broker>,
    config: SqsConfig,
}

/// The endpoint as an axum router: every path and method, so requests posted to queue URLs and
/// malformed requests alike get SQS-shaped answers.
pub fn router(broker: Arc<Broker>, config: SqsConfig) -> Router {
    Router::new()
        .fallback(serve)
        .with_state(Arc::new(Endpoint { broker, config }))
}

async fn serve(State(endpoint): State<Arc<Endpoint>>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let protocol = Protocol::detect(request.headers());
    let span = tracing::info_span!(
        "sqs_request",
        action = tracing::field::Empty,
        access_key = tracing::field::Empty,
        protocol = protocol.as_str(),
        request_id = %request_id,
    );
    let started = Instant::now();
    async move {
        let handled = endpoint.handle(protocol, request).await;
        let (action, outcome) = match &handled {
            Ok((action, _)) => (Some(*action), "ok"),
            Err((action, error)) => (*action, error.code.as_str()),
        };
        let action_label = action.map_or("unknown", Action::name);
        metrics::counter!(
            "ferry_sqs_requests_total",
            "action" => action_label,
            "protocol" => protocol.as_str(),
            "outcome" => outcome,
        )
        .increment(1);
        metrics::histogram!("ferry_sqs_request_seconds", "action" => action_label)
            .record(started.elapsed().as_secs_f64());
        match handled {
            Ok((action, result)) => render::success(protocol, action, &request_id, result),
            Err((_, error)) => {
                if wire_error(error.code).fault == Fault::Receiver {
                    tracing::warn!(code = %error.code, message = %error.message, "SQS request failed");
                } else {
                    // Sender errors can echo signatures and request text: the code is enough.
                    tracing::debug!(code = %error.code, "SQS request refused");
                }
                render::error(protocol, &request_id, &error)
            }
        }
    }
    .instrument(span)
    .await
}

/// An action's result, or an error with the action if the request got as far as naming one.
type Handled = Result<(Action, Option<Fields>), (Option<Action>, FerryError)>;

impl Endpoint {
    async fn handle(&self, protocol: Protocol, request: Request) -> Handled {
        let (parts, body) = request.into_parts();
        let before_action = |error| (None, error);
        let body = read_body(&parts.headers, body)
            .await
            .map_err(before_action)?;
        let check = auth::Check {
            mode: &self.config.auth,
            max_clock_skew: self.config.max_clock_skew,
            account_id: self.broker.account_id(),
            now: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs()),
        };
        let caller = check.caller(&parts, &body).map_err(before_action)?;
        let (action, params) = protocol::decode(protocol, &parts, &body).map_err(before_action)?;
        let span = tracing::Span::current();
        span.record("action", action.name());
        if let Some(access_key) = &caller.access_key {
            span.record("access_key", access_key.as_str());
        }
        let context = handlers::Context {
            broker: &self.broker,
            urls: UrlBuilder::new(
                self.config.advertised_base_url.as_deref(),
                &parts.headers,
                self.broker.account_id(),
            ),
            caller,
            path: parts.uri.path(),
        };
        match handlers::execute(&context, action, &params).await {
            Ok(result) => Ok((action, result)),
            Err(error) => Err((Some(action), error)),
        }
    }
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, FerryError> {
    let too_large = || {
        FerryError::new(
            ErrorCode::RequestTooLarge,
            format!("HTTP content length exceeded {MAX_REQUEST_BYTES} bytes."),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_REQUEST_BYTES)
        .await
        .map_err(|error| {
            let error = error.into_inner();
            if error.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                FerryError::new(
                    ErrorCode::MalformedRequest,
                    format!("The request body could not be read: {error}"),
                )
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_its_auth_mode_and_checks_the_base_url() {
        let default = SqsConfig::new(None, "parse", Credentials::default()).unwrap();
        assert!(matches!(default.auth, AuthMode::Parse));
        assert_eq!(default.max_clock_skew, Duration::from_secs(900));
        assert!(matches!(
            SqsConfig::new(None, "off", Credentials::default())
                .unwrap()
                .auth,
            AuthMode::Off
        ));
        assert!(matches!(
            SqsConfig::new(None, "verify", Credentials::default()),
            Err(ConfigError::NoCredentials)
        ));
        assert!(matches!(
            SqsConfig::new(None, "sigv2", Credentials::default()),
            Err(ConfigError::AuthMode(_))
        ));
        let keys = [(
            "AKID".to_owned(),
            Credential {
                secret_access_key: "s".into(),
                account_id: None,
            },
        )];
        assert!(matches!(
            SqsConfig::new(None, "verify", Credentials::new(keys.into()))
                .unwrap()
                .auth,
            AuthMode::Verify(_)
        ));
        assert!(SqsConfig::new(
            Some("https://sqs.example.com".into()),
            "off",
            Credentials::default()
        )
        .is_ok());
        for bad in ["sqs.example.com", "http://", "ftp://x"] {
            assert!(
                SqsConfig::new(Some(bad.into()), "off", Credentials::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_before_and_while_reading() {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, "99999999999".parse().unwrap());
        assert_eq!(
            read_body(&headers, Body::empty()).await.unwrap_err().code,
            ErrorCode::RequestTooLarge
        );
        let big = Body::from(vec![b'a'; MAX_REQUEST_BYTES + 1]);
        assert_eq!(
            read_body(&HeaderMap::new(), big).await.unwrap_err().code,
            ErrorCode::RequestTooLarge
        );
        let fits = Body::from(vec![b'a'; MAX_REQUEST_BYTES]);
        assert_eq!(
            read_body(&HeaderMap::new(), fits).await.unwrap().len(),
            MAX_REQUEST_BYTES
        );
    }
}

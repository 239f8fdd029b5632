//! Writing responses: results and errors in the JSON 1.0 protocol or as Query XML, each with the
//! request id (`x-amzn-RequestId`, and `ResponseMetadata/RequestId` or `RequestId` in XML).

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use ferry_types::{ErrorCode, FerryError};

use crate::action::Action;
use crate::output::{Fields, Value};
use crate::protocol::Protocol;
use crate::wire_error::wire_error;

const XML_NAMESPACE: &str = "http://queue.amazonaws.com/doc/2012-11-05/";
const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const XML_CONTENT_TYPE: &str = "text/xml";
const REQUEST_ID_HEADER: &str = "x-amzn-requestid";
const QUERY_ERROR_HEADER: &str = "x-amzn-query-error";

/// A successful action; `result` is `None` for actions that return nothing.
pub fn success(
    protocol: Protocol,
    action: Action,
    request_id: &str,
    result: Option<Fields>,
) -> Response {
    let body = match protocol {
        Protocol::Json => json_document(result.unwrap_or_default()),
        Protocol::Query => xml_document(action, request_id, result.as_ref()),
    };
    respond(protocol, StatusCode::OK, request_id, body, None)
}

pub fn error(protocol: Protocol, request_id: &str, error: &FerryError) -> Response {
    let wire = wire_error(error.code);
    match protocol {
        Protocol::Json => {
            let body = serde_json::json!({
                "__type": wire.type_name(),
                "message": error.message,
            })
            .to_string();
            let query_error = format!("{};{}", wire.code, wire.fault.as_str());
            respond(protocol, wire.status, request_id, body, Some(query_error))
        }
        Protocol::Query => {
            // The Query protocol's own wording for a missing queue.
            let message = if error.code == ErrorCode::QueueDoesNotExist {
                "The specified queue does not exist for this wsdl version."
            } else {
                error.message.as_str()
            };
            let mut xml = format!("<?xml version=\"1.0\"?><ErrorResponse xmlns=\"{XML_NAMESPACE}\"><Error><Type>{}</Type><Code>", wire.fault.as_str());
            escape_into(&mut xml, wire.code);
            xml.push_str("</Code><Message>");
            escape_into(&mut xml, message);
            xml.push_str("</Message><Detail/></Error><RequestId>");
            escape_into(&mut xml, request_id);
            xml.push_str("</RequestId></ErrorResponse>");
            respond(protocol, wire.status, request_id, xml, None)
        }
    }
}

fn respond(
    protocol: Protocol,
    status: StatusCode,
    request_id: &str,
    body: String,
    query_error: Option<String>,
) -> Response {
    let content_type = match protocol {
        Protocol::Json => JSON_CONTENT_TYPE,
        Protocol::Query => XML_CONTENT_TYPE,
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, value);
    }
    if let Some(value) = query_error.and_then(|text| HeaderValue::from_str(&text).ok()) {
        headers.insert(QUERY_ERROR_HEADER, value);
    }
    response
}

fn json_document(fields: Fields) -> String {
    json_struct(fields).to_string()
}

fn json_struct(fields: Fields) -> serde_json::Value {
    serde_json::Value::Object(
        fields
            .0
            .into_iter()
            .map(|(name, value)| (name.to_owned(), json_value(value)))
            .collect(),
    )
}

fn json_value(value: Value) -> serde_json::Value {
    match value {
        Value::Text(text) => serde_json::Value::String(text),
        Value::Number(number) => serde_json::Value::from(number),
        Value::Bool(flag) => serde_json::Value::Bool(flag),
        Value::Struct(fields) => json_struct(fields),
        Value::List { values, .. } => values.into_iter().map(json_value).collect(),
        Value::Map { pairs, .. } => serde_json::Value::Object(
            pairs
                .into_iter()
                .map(|(key, value)| (key, json_value(value)))
                .collect(),
        ),
    }
}

/// `<{Action}Response>` with `<{Action}Result>` (absent for actions that return nothing) and
/// `<ResponseMetadata>`.
fn xml_document(action: Action, request_id: &str, result: Option<&Fields>) -> String {
    let name = action.name();
    let mut xml = format!("<?xml version=\"1.0\"?><{name}Response xmlns=\"{XML_NAMESPACE}\">");
    if let Some(fields) = result {
        xml.push_str(&format!("<{name}Result>"));
        xml_fields(&mut xml, fields);
        xml.push_str(&format!("</{name}Result>"));
    }
    xml.push_str("<ResponseMetadata><RequestId>");
    escape_into(&mut xml, request_id);
    xml.push_str(&format!("</RequestId></ResponseMetadata></{name}Response>"));
    xml
}

fn xml_fields(xml: &mut String, fields: &Fields) {
    for (name, value) in &fields.0 {
        xml_member(xml, name, value);
    }
}

fn xml_member(xml: &mut String, name: &str, value: &Value) {
    match value {
        Value::List { item, values } => {
            for value in values {
                xml_member(xml, item, value);
            }
        }
        Value::Map { entry, key, pairs } => {
            for (k, v) in pairs {
                xml.push_str(&format!("<{entry}><{key}>"));
                escape_into(xml, k);
                xml.push_str(&format!("</{key}>"));
                xml_member(xml, "Value", v);
                xml.push_str(&format!("</{entry}>"));
            }
        }
        scalar_or_struct => {
            xml.push_str(&format!("<{name}>"));
            match scalar_or_struct {
                Value::Text(text) => escape_into(xml, text),
                Value::Number(number) => xml.push_str(&number.to_string()),
                Value::Bool(flag) => xml.push_str(if *flag { "true" } else { "false" }),
                Value::Struct(fields) => xml_fields(xml, fields),
                Value::List { .. } | Value::Map { .. } => {}
            }
            xml.push_str(&format!("</{name}>"));
        }
    }
}

/// Escapes text for XML element content. A carriage return becomes `&#13;` (a parser would turn
/// a literal one into a line feed, changing bodies and their MD5); characters XML 1.0 cannot carry
/// at all (only reachable through echoed input in error messages) become U+FFFD.
pub fn escape_into(xml: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => xml.push_str("&amp;"),
            '<' => xml.push_str("&lt;"),
            '>' => xml.push_str("&gt;"),
            '"' => xml.push_str("&quot;"),
            '\'' => xml.push_str("&apos;"),
            '\r' => xml.push_str("&#13;"),
            '\t' | '\n' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'.. => {
                xml.push(c)
            }
            _ => xml.push('\u{FFFD}'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_text(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, text);
        out
    }

    #[test]
    fn xml_escaping_keeps_carriage_returns_and_markup_intact() {
        assert_eq!(escaped("a\r\nb"), "a&#13;\nb");
        assert_eq!(
            escaped(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
        );
        assert_eq!(escaped("tab\there \u{1F600}"), "tab\there \u{1F600}");
        assert_eq!(escaped("bad\u{1}\u{FFFE}"), "bad\u{FFFD}\u{FFFD}");
    }

    fn receive_result() -> Fields {
        let attribute = Fields::new()
            .text("StringValue", "v")
            .text("DataType", "String");
        let message = Fields::new()
            .text("MessageId", "m1")
            .text("Body", "x\ry")
            .string_map(
                "Attributes",
                "Attribute",
                "Name",
                [("SenderId".to_owned(), "me".to_owned())],
            )
            .map(
                "MessageAttributes",
                "MessageAttribute",
                "Name",
                vec![("a".to_owned(), Value::Struct(attribute))],
            );
        Fields::new().list("Messages", "Message", vec![Value::Struct(message)])
    }

    #[tokio::test]
    async fn query_results_are_flattened_xml_with_request_metadata() {
        let response = success(
            Protocol::Query,
            Action::ReceiveMessage,
            "rid-1",
            Some(receive_result()),
        );
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/xml");
        assert_eq!(response.headers()["x-amzn-requestid"], "rid-1");
        assert_eq!(
            body_text(response).await,
            "<?xml version=\"1.0\"?><ReceiveMessageResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">\
             <ReceiveMessageResult><Message><MessageId>m1</MessageId><Body>x&#13;y</Body>\
             <Attribute><Name>SenderId</Name><Value>me</Value></Attribute>\
             <MessageAttribute><Name>a</Name><Value><StringValue>v</StringValue><DataType>String</DataType></Value></MessageAttribute>\
             </Message></ReceiveMessageResult>\
             <ResponseMetadata><RequestId>rid-1</RequestId></ResponseMetadata></ReceiveMessageResponse>"
        );
    }

    #[tokio::test]
    async fn void_results_have_no_result_element() {
        let xml = body_text(success(Protocol::Query, Action::DeleteQueue, "r", None)).await;
        assert_eq!(
            xml,
            "<?xml version=\"1.0\"?><DeleteQueueResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">\
             <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DeleteQueueResponse>"
        );
        let json = success(Protocol::Json, Action::DeleteQueue, "r", None);
        assert_eq!(json.headers()["content-type"], "application/x-amz-json-1.0");
        assert_eq!(body_text(json).await, "{}");
    }

    #[tokio::test]
    async fn json_results_are_objects_and_arrays() {
        let response = success(
            Protocol::Json,
            Action::ReceiveMessage,
            "r",
            Some(receive_result()),
        );
        let body: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"Messages": [{
                "MessageId": "m1",
                "Body": "x\ry",
                "Attributes": {"SenderId": "me"},
                "MessageAttributes": {"a": {"StringValue": "v", "DataType": "String"}},
            }]})
        );
    }

    #[tokio::test]
    async fn json_errors_carry_type_message_and_query_error_header() {
        let response = error(Protocol::Json, "r", &FerryError::queue_does_not_exist());
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()["x-amzn-query-error"],
            "AWS.SimpleQueueService.NonExistentQueue;Sender"
        );
        assert_eq!(response.headers()["x-amzn-requestid"], "r");
        let body: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "__type": "com.amazonaws.sqs#QueueDoesNotExist",
                "message": "The specified queue does not exist.",
            })
        );
        let internal = error(Protocol::Json, "r", &FerryError::internal("boom"));
        assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            internal.headers()["x-amzn-query-error"],
            "InternalError;Receiver"
        );
    }

    #[tokio::test]
    async fn query_errors_are_error_responses() {
        let response = error(Protocol::Query, "r-9", &FerryError::queue_does_not_exist());
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.headers().get("x-amzn-query-error").is_none());
        assert_eq!(
            body_text(response).await,
            "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">\
             <Error><Type>Sender</Type><Code>AWS.SimpleQueueService.NonExistentQueue</Code>\
             <Message>The specified queue does not exist for this wsdl version.</Message><Detail/></Error>\
             <RequestId>r-9</RequestId></ErrorResponse>"
        );
        let purge = error(
            Protocol::Query,
            "r",
            &FerryError::new(ErrorCode::PurgeQueueInProgress, "Only one <purge> & then"),
        );
        assert_eq!(purge.status(), StatusCode::FORBIDDEN);
        assert!(body_text(purge)
            .await
            .contains("<Message>Only one &lt;purge&gt; &amp; then</Message>"));
    }
}

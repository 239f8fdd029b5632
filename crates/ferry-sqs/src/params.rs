//! A request's parameters in either protocol behind one set of getters: a JSON object (JSON 1.0)
//! or the flattened `Member.N.Field=value` pairs of a form or query string (Query). Getters take the
//! JSON member name and, where the Query protocol flattens differently, its Query name.
//!
//! Only the wire is checked here (presence, types, number syntax, base64); the broker checks
//! meaning (ranges, names, sizes).

use std::collections::BTreeMap;

use base64::Engine as _;
use ferry_types::{AttributeData, AttributeValue, ErrorCode, FerryError};
use serde_json::{Map, Value};

pub enum Params {
    Json(Map<String, Value>),
    Query(BTreeMap<String, String>),
}

/// A message attribute as the wire carries it, before its value is chosen.
struct RawAttribute {
    name: String,
    data_type: Option<String>,
    string_value: Option<String>,
    binary_value: Option<String>,
}

pub fn missing(name: &str) -> FerryError {
    FerryError::new(
        ErrorCode::MissingParameter,
        format!("The request must contain the parameter {name}."),
    )
}

fn wrong_type(name: &str, expected: &str) -> FerryError {
    FerryError::new(
        ErrorCode::MalformedRequest,
        format!("The value of member {name} must be {expected}."),
    )
}

fn not_integer(name: &str, shown: &str) -> FerryError {
    FerryError::invalid(format!(
        "Value {shown} for parameter {name} is invalid. Reason: Must be an integer from 0 to {}.",
        u32::MAX
    ))
}

impl Params {
    /// An optional string member.
    pub fn string(&self, name: &str) -> Result<Option<String>, FerryError> {
        match self {
            Self::Json(object) => match object.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(text)) => Ok(Some(text.clone())),
                Some(_) => Err(wrong_type(name, "a string")),
            },
            Self::Query(pairs) => Ok(pairs.get(name).cloned()),
        }
    }

    /// A required string member; an empty one counts as missing, as in SQS.
    pub fn required(&self, name: &str) -> Result<String, FerryError> {
        match self.string(name)? {
            Some(text) if !text.is_empty() => Ok(text),
            _ => Err(missing(name)),
        }
    }

    /// An optional non-negative integer member (SQS integers are 32-bit).
    pub fn integer(&self, name: &str) -> Result<Option<u32>, FerryError> {
        match self {
            Self::Json(object) => match object.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(number)) => match number.as_u64() {
                    Some(n) => u32::try_from(n)
                        .map(Some)
                        .map_err(|_| not_integer(name, &number.to_string())),
                    None => Err(not_integer(name, &number.to_string())),
                },
                Some(_) => Err(wrong_type(name, "a number")),
            },
            Self::Query(pairs) => match pairs.get(name) {
                None => Ok(None),
                Some(text) => text
                    .trim()
                    .parse::<u32>()
                    .map(Some)
                    .map_err(|_| not_integer(name, &shown(text))),
            },
        }
    }

    /// A list of strings: a JSON array, or `<query_item>.1`, `<query_item>.2`, ... in Query.
    pub fn strings(&self, json: &str, query_item: &str) -> Result<Vec<String>, FerryError> {
        match self {
            Self::Json(object) => match object.get(json) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        Value::String(text) => Ok(text.clone()),
                        _ => Err(wrong_type(json, "a list of strings")),
                    })
                    .collect(),
                Some(_) => Err(wrong_type(json, "a list of strings")),
            },
            Self::Query(pairs) => Ok(numbered(pairs, query_item)
                .into_values()
                .filter_map(|group| group.get("").cloned())
                .collect()),
        }
    }

    /// A map of strings: a JSON object, or `<query_entry>.N.<key_field>` with `<query_entry>.N.Value`
    /// in Query (attributes use `Name`, tags `Key`).
    pub fn string_map(
        &self,
        json: &str,
        query_entry: &str,
        key_field: &str,
    ) -> Result<BTreeMap<String, String>, FerryError> {
        match self {
            Self::Json(object) => match object.get(json) {
                None | Some(Value::Null) => Ok(BTreeMap::new()),
                Some(Value::Object(map)) => map
                    .iter()
                    .map(|(key, value)| match value {
                        Value::String(text) => Ok((key.clone(), text.clone())),
                        _ => Err(wrong_type(json, "a map of strings")),
                    })
                    .collect(),
                Some(_) => Err(wrong_type(json, "a map of strings")),
            },
            Self::Query(pairs) => {
                let mut map = BTreeMap::new();
                for (index, group) in numbered(pairs, query_entry) {
                    let key = group
                        .get(key_field)
                        .ok_or_else(|| missing(&format!("{query_entry}.{index}.{key_field}")))?;
                    let value = group
                        .get("Value")
                        .ok_or_else(|| missing(&format!("{query_entry}.{index}.Value")))?;
                    map.insert(key.clone(), value.clone());
                }
                Ok(map)
            }
        }
    }

    /// The entries of a batch, each as its own parameters: a JSON array of objects, or the
    /// `<query_entry>.N.*` groups in Query, in ascending N.
    pub fn entries(&self, json: &str, query_entry: &str) -> Result<Vec<Params>, FerryError> {
        match self {
            Self::Json(object) => match object.get(json) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        Value::Object(entry) => Ok(Params::Json(entry.clone())),
                        _ => Err(wrong_type(json, "a list of structures")),
                    })
                    .collect(),
                Some(_) => Err(wrong_type(json, "a list of structures")),
            },
            Self::Query(pairs) => Ok(numbered(pairs, query_entry)
                .into_values()
                .map(Params::Query)
                .collect()),
        }
    }

    /// User message attributes (`MessageAttributes` / `MessageAttribute.N`). Binary values are
    /// base64 on the wire in both protocols.
    pub fn message_attributes(&self) -> Result<ferry_types::MessageAttributes, FerryError> {
        let mut attributes = ferry_types::MessageAttributes::new();
        for raw in self.raw_attributes("MessageAttributes", "MessageAttribute")? {
            let name = raw.name.clone();
            let value = attribute_value(raw)?;
            if attributes.insert(name.clone(), value).is_some() {
                return Err(FerryError::invalid(format!(
                    "Message (user) attribute name '{name}' is repeated."
                )));
            }
        }
        Ok(attributes)
    }

    /// The `AWSTraceHeader` of `MessageSystemAttributes`, the only system attribute a sender sets.
    pub fn trace_header(&self) -> Result<Option<String>, FerryError> {
        let mut trace = None;
        for raw in self.raw_attributes("MessageSystemAttributes", "MessageSystemAttribute")? {
            if raw.name != "AWSTraceHeader" {
                return Err(FerryError::invalid(format!(
                    "Message system attribute name '{}' is invalid.",
                    shown(&raw.name)
                )));
            }
            if raw.data_type.as_deref() != Some("String") {
                return Err(FerryError::invalid(
                    "The message system attribute 'AWSTraceHeader' must have type 'String'.",
                ));
            }
            match raw.string_value {
                Some(text) if !text.is_empty() => trace = Some(text),
                _ => return Err(FerryError::invalid(
                    "The message system attribute 'AWSTraceHeader' must contain a non-empty value.",
                )),
            }
        }
        Ok(trace)
    }

    fn raw_attributes(
        &self,
        json: &str,
        query_entry: &str,
    ) -> Result<Vec<RawAttribute>, FerryError> {
        match self {
            Self::Json(object) => match object.get(json) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Object(map)) => map
                    .iter()
                    .map(|(name, value)| match value {
                        Value::Object(fields) => {
                            let fields = Params::Json(fields.clone());
                            Ok(RawAttribute {
                                name: name.clone(),
                                data_type: fields.string("DataType")?,
                                string_value: fields.string("StringValue")?,
                                binary_value: fields.string("BinaryValue")?,
                            })
                        }
                        _ => Err(wrong_type(json, "a map of attribute values")),
                    })
                    .collect(),
                Some(_) => Err(wrong_type(json, "a map of attribute values")),
            },
            Self::Query(pairs) => numbered(pairs, query_entry)
                .into_iter()
                .map(|(index, group)| {
                    Ok(RawAttribute {
                        name: group
                            .get("Name")
                            .cloned()
                            .ok_or_else(|| missing(&format!("{query_entry}.{index}.Name")))?,
                        data_type: group.get("Value.DataType").cloned(),
                        string_value: group.get("Value.StringValue").cloned(),
                        binary_value: group.get("Value.BinaryValue").cloned(),
                    })
                })
                .collect(),
        }
    }
}

/// Chooses an attribute's value by its data type (Binary in `BinaryValue`, the rest in
/// `StringValue`), falling back to whichever is present so the broker can name the mismatch.
fn attribute_value(raw: RawAttribute) -> Result<AttributeValue, FerryError> {
    let name = raw.name;
    let data_type = match raw.data_type {
        Some(data_type) if !data_type.is_empty() => data_type,
        _ => {
            return Err(FerryError::invalid(format!(
                "The message attribute '{}' must contain non-empty message attribute type.",
                shown(&name)
            )))
        }
    };
    let binary = |text: String| {
        decode_base64(&text)
            .map(AttributeData::Binary)
            .ok_or_else(|| {
                FerryError::invalid(format!(
                    "The message attribute '{}' has a BinaryValue that is not valid base64.",
                    shown(&name)
                ))
            })
    };
    let wants_binary = data_type.split('.').next() == Some("Binary");
    let value = match (raw.string_value, raw.binary_value) {
        (_, Some(bytes)) if wants_binary => binary(bytes)?,
        (Some(text), _) => AttributeData::String(text),
        (None, Some(bytes)) => binary(bytes)?,
        (None, None) => {
            return Err(FerryError::invalid(format!(
                "The message attribute '{}' must contain a non-empty value.",
                shown(&name)
            )))
        }
    };
    Ok(AttributeValue { data_type, value })
}

fn decode_base64(text: &str) -> Option<bytes::Bytes> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let text = text.trim();
    STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .ok()
        .map(bytes::Bytes::from)
}

/// The `<prefix>.N[.rest]` pairs grouped by N (ascending), each group keyed by `rest` (`""` for a
/// plain `<prefix>.N`). Keys whose N is not a number are not part of the list.
fn numbered(
    pairs: &BTreeMap<String, String>,
    prefix: &str,
) -> BTreeMap<u64, BTreeMap<String, String>> {
    let start = format!("{prefix}.");
    let mut groups: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    for (key, value) in pairs.range(start.clone()..) {
        let Some(tail) = key.strip_prefix(&start) else {
            break;
        };
        let (index, rest) = tail.split_once('.').unwrap_or((tail, ""));
        if let Ok(index) = index.parse::<u64>() {
            groups
                .entry(index)
                .or_default()
                .insert(rest.to_owned(), value.clone());
        }
    }
    groups
}

/// Caller-supplied text as it may appear in an error message: bounded in length.
pub fn shown(text: &str) -> String {
    const MAX_SHOWN: usize = 256;
    text.chars().take(MAX_SHOWN).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Params {
        Params::Query(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn json(text: &str) -> Params {
        match serde_json::from_str(text).unwrap() {
            Value::Object(object) => Params::Json(object),
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn scalars_are_read_and_checked_in_both_protocols() {
        let q = query(&[("QueueUrl", "u"), ("WaitTimeSeconds", "20"), ("Empty", "")]);
        assert_eq!(q.required("QueueUrl").unwrap(), "u");
        assert_eq!(q.integer("WaitTimeSeconds").unwrap(), Some(20));
        assert_eq!(q.integer("Absent").unwrap(), None);
        assert_eq!(
            q.required("Empty").unwrap_err().code,
            ErrorCode::MissingParameter
        );
        let bad = query(&[("WaitTimeSeconds", "abc"), ("VisibilityTimeout", "-1")]);
        assert_eq!(
            bad.integer("WaitTimeSeconds").unwrap_err().code,
            ErrorCode::InvalidParameterValue
        );
        assert_eq!(
            bad.integer("VisibilityTimeout").unwrap_err().code,
            ErrorCode::InvalidParameterValue
        );

        let j = json(r#"{"QueueUrl":"u","WaitTimeSeconds":20,"Bad":"20","Neg":-1,"Frac":1.5}"#);
        assert_eq!(j.required("QueueUrl").unwrap(), "u");
        assert_eq!(j.integer("WaitTimeSeconds").unwrap(), Some(20));
        assert_eq!(
            j.integer("Bad").unwrap_err().code,
            ErrorCode::MalformedRequest
        );
        assert_eq!(
            j.integer("Neg").unwrap_err().code,
            ErrorCode::InvalidParameterValue
        );
        assert_eq!(
            j.integer("Frac").unwrap_err().code,
            ErrorCode::InvalidParameterValue
        );
        assert_eq!(
            j.string("WaitTimeSeconds").unwrap_err().code,
            ErrorCode::MalformedRequest
        );
        assert_eq!(
            j.required("Missing").unwrap_err().message,
            "The request must contain the parameter Missing."
        );
    }

    #[test]
    fn query_lists_and_maps_are_flattened_and_ordered_by_index() {
        let q = query(&[
            ("AttributeName.2", "B"),
            ("AttributeName.1", "A"),
            ("AttributeName.10", "C"),
            ("AttributeNames", "not part of the list"),
            ("Attribute.1.Name", "VisibilityTimeout"),
            ("Attribute.1.Value", "10"),
            ("Attribute.2.Name", "DelaySeconds"),
            ("Attribute.2.Value", "5"),
            ("Tag.1.Key", "team"),
            ("Tag.1.Value", "blue"),
        ]);
        assert_eq!(
            q.strings("AttributeNames", "AttributeName").unwrap(),
            ["A", "B", "C"]
        );
        let attributes = q.string_map("Attributes", "Attribute", "Name").unwrap();
        assert_eq!(attributes["VisibilityTimeout"], "10");
        assert_eq!(attributes["DelaySeconds"], "5");
        assert_eq!(q.string_map("Tags", "Tag", "Key").unwrap()["team"], "blue");

        let half = query(&[("Attribute.1.Name", "DelaySeconds")]);
        assert_eq!(
            half.string_map("Attributes", "Attribute", "Name")
                .unwrap_err()
                .message,
            "The request must contain the parameter Attribute.1.Value."
        );
    }

    #[test]
    fn json_lists_and_maps_are_typed() {
        let j = json(r#"{"AttributeNames":["All"],"tags":{"a":"b"},"Bad":{"a":1}}"#);
        assert_eq!(
            j.strings("AttributeNames", "AttributeName").unwrap(),
            ["All"]
        );
        assert_eq!(j.string_map("tags", "Tag", "Key").unwrap()["a"], "b");
        assert_eq!(
            j.string_map("Bad", "Bad", "Key").unwrap_err().code,
            ErrorCode::MalformedRequest
        );
    }

    #[test]
    fn batch_entries_split_into_their_own_parameters() {
        let q = query(&[
            ("SendMessageBatchRequestEntry.2.Id", "b"),
            ("SendMessageBatchRequestEntry.1.Id", "a"),
            ("SendMessageBatchRequestEntry.1.MessageBody", "hello"),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Name",
                "n",
            ),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType",
                "String",
            ),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue",
                "v",
            ),
        ]);
        let entries = q
            .entries("Entries", "SendMessageBatchRequestEntry")
            .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].required("Id").unwrap(), "a");
        assert_eq!(entries[1].required("Id").unwrap(), "b");
        assert_eq!(
            entries[0].message_attributes().unwrap()["n"].value,
            AttributeData::String("v".into())
        );
    }

    #[test]
    fn binary_attributes_are_base64_in_both_protocols() {
        let q = query(&[
            ("MessageAttribute.1.Name", "bin"),
            ("MessageAttribute.1.Value.DataType", "Binary.gif"),
            ("MessageAttribute.1.Value.BinaryValue", "AAEC/w=="),
        ]);
        let expected = AttributeData::Binary(bytes::Bytes::from_static(&[0, 1, 2, 255]));
        assert_eq!(q.message_attributes().unwrap()["bin"].value, expected);
        let j =
            json(r#"{"MessageAttributes":{"bin":{"DataType":"Binary","BinaryValue":"AAEC/w=="}}}"#);
        assert_eq!(j.message_attributes().unwrap()["bin"].value, expected);

        let bad = json(r#"{"MessageAttributes":{"bin":{"DataType":"Binary","BinaryValue":"@@"}}}"#);
        assert_eq!(
            bad.message_attributes().unwrap_err().code,
            ErrorCode::InvalidParameterValue
        );
        let untyped = json(r#"{"MessageAttributes":{"s":{"StringValue":"x"}}}"#);
        assert_eq!(
            untyped.message_attributes().unwrap_err().code,
            ErrorCode::InvalidParameterValue
        );
    }

    #[test]
    fn only_the_trace_header_is_a_settable_system_attribute() {
        let j = json(
            r#"{"MessageSystemAttributes":{"AWSTraceHeader":{"DataType":"String","StringValue":"Root=1-abc"}}}"#,
        );
        assert_eq!(j.trace_header().unwrap().as_deref(), Some("Root=1-abc"));
        let q = query(&[
            ("MessageSystemAttribute.1.Name", "SenderId"),
            ("MessageSystemAttribute.1.Value.DataType", "String"),
            ("MessageSystemAttribute.1.Value.StringValue", "me"),
        ]);
        assert_eq!(
            q.trace_header().unwrap_err().code,
            ErrorCode::InvalidParameterValue
        );
    }
}

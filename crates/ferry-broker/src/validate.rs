//! Request checks shared by every transport: message bodies and attributes, batches, receive
//! parameters. A request that fails here changes nothing.

use std::collections::HashSet;

use ferry_types::{AttributeData, ErrorCode, FerryError, MessageAttributes};

/// Most messages a batch may carry, and most a receive may return.
pub const MAX_BATCH_ENTRIES: usize = 10;
const MAX_ATTRIBUTES: usize = 10;
const MAX_ATTRIBUTE_NAME_LEN: usize = 256;
const MAX_BATCH_ID_LEN: usize = 80;
pub const MAX_DELAY_SECONDS: u32 = 900;
pub const MAX_VISIBILITY_TIMEOUT: u32 = 43_200;
pub const MAX_WAIT_SECONDS: u32 = 20;

/// Characters SQS allows in bodies and string attribute values (the XML 1.0 character set).
fn allowed_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

pub fn check_text(text: &str, what: &str) -> Result<(), FerryError> {
    // Most text is ASCII, where only control characters other than tab, newline and carriage return
    // are refused: a byte scan the compiler vectorises (decoding every character of every body was
    // ~1.6% of a node's time in batched SQS sends).
    let plain_ascii = text.is_ascii()
        && text
            .bytes()
            .all(|b| b >= 0x20 || matches!(b, b'\t' | b'\n' | b'\r'));
    if plain_ascii {
        return Ok(());
    }
    if let Some(bad) = text.chars().find(|c| !allowed_char(*c)) {
        return Err(FerryError::new(
            ErrorCode::InvalidMessageContents,
            format!(
                "Invalid characters found in {what}: #x{:X} is not allowed.",
                bad as u32
            ),
        ));
    }
    Ok(())
}

/// Whether a message is sent alone or as an entry of a batch: SQS words a size failure
/// differently for each (recorded against AWS by LocalStack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    Alone,
    InBatch,
}

/// Checks a message and returns the bytes it counts against the size limit (body plus attribute
/// names, types and values).
pub fn check_message(
    body: &str,
    attributes: &MessageAttributes,
    max_bytes: usize,
    sending: Sending,
) -> Result<usize, FerryError> {
    if body.is_empty() {
        return Err(FerryError::new(
            ErrorCode::MissingParameter,
            "The request must contain the parameter MessageBody.",
        ));
    }
    check_text(body, "the message body")?;
    let size = body.len() + check_attributes(attributes)?;
    if size > max_bytes {
        let verdict = match sending {
            Sending::Alone => "are invalid",
            Sending::InBatch => "cannot be validated",
        };
        return Err(FerryError::invalid(format!(
            "One or more parameters {verdict}. Reason: Message must be shorter than {max_bytes} bytes."
        )));
    }
    Ok(size)
}

/// Checks user message attributes; returns their size in bytes.
pub fn check_attributes(attributes: &MessageAttributes) -> Result<usize, FerryError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(FerryError::invalid(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MAX_ATTRIBUTES}].",
            attributes.len()
        )));
    }
    let mut size = 0;
    for (name, value) in attributes {
        check_attribute_name(name)?;
        let base_type = value.data_type.split('.').next().unwrap_or_default();
        let label_ok = value.data_type.len() <= MAX_ATTRIBUTE_NAME_LEN
            && !value.data_type.ends_with('.')
            && value
                .data_type
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !matches!(base_type, "String" | "Number" | "Binary") || !label_ok {
            return Err(FerryError::invalid(format!(
                "The type of message (user) attribute '{name}' is invalid. You must use only the following supported type prefixes: Binary, Number, String."
            )));
        }
        let value_len = match (&value.value, base_type) {
            (AttributeData::Binary(bytes), "Binary") => bytes.len(),
            (AttributeData::String(text), "String" | "Number") => {
                check_text(text, &format!("message attribute '{name}'"))?;
                if base_type == "Number" && !is_number(text) {
                    return Err(FerryError::invalid(format!(
                        "Can't cast the value of message (user) attribute '{name}' to a number."
                    )));
                }
                text.len()
            }
            _ => {
                return Err(FerryError::invalid(format!(
                    "The message attribute '{name}' with type '{}' must use field '{}'.",
                    value.data_type,
                    if base_type == "Binary" {
                        "Binary"
                    } else {
                        "String"
                    }
                )))
            }
        };
        if value_len == 0 {
            return Err(FerryError::invalid(format!(
                "The message attribute '{name}' must contain a non-empty value."
            )));
        }
        size += name.len() + value.data_type.len() + value_len;
    }
    Ok(size)
}

fn check_attribute_name(name: &str) -> Result<(), FerryError> {
    let lower = name.to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= MAX_ATTRIBUTE_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.");
    if valid {
        Ok(())
    } else {
        Err(FerryError::invalid(format!(
            "Message (user) attribute name '{name}' is invalid."
        )))
    }
}

/// A decimal number as SQS accepts it: optional sign, digits, optional fraction and exponent.
fn is_number(text: &str) -> bool {
    let text = text.trim();
    !text.is_empty()
        && text.parse::<f64>().is_ok_and(f64::is_finite)
        && !text.contains(['x', 'X', 'i', 'I', 'n', 'N'])
}

/// Checks a batch's entry ids: 1–10 entries, distinct, each 1–80 of `[A-Za-z0-9_-]`.
pub fn check_batch_ids<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> Result<(), FerryError> {
    let count = ids.len();
    if count == 0 {
        return Err(FerryError::new(
            ErrorCode::EmptyBatchRequest,
            "There should be at least one entry in the request.",
        ));
    }
    if count > MAX_BATCH_ENTRIES {
        return Err(FerryError::new(
            ErrorCode::TooManyEntriesInBatchRequest,
            format!("Maximum number of entries per request are {MAX_BATCH_ENTRIES}. You have sent {count}."),
        ));
    }
    let mut seen = HashSet::with_capacity(count);
    for id in ids {
        let valid = !id.is_empty()
            && id.len() <= MAX_BATCH_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(FerryError::new(
                ErrorCode::InvalidBatchEntryId,
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.",
            ));
        }
        if !seen.insert(id) {
            return Err(FerryError::new(
                ErrorCode::BatchEntryIdsNotDistinct,
                format!("Id {id} repeated."),
            ));
        }
    }
    Ok(())
}

pub fn check_range(name: &str, value: u32, min: u32, max: u32) -> Result<u32, FerryError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(FerryError::invalid(format!(
            "Value {value} for parameter {name} is invalid. Reason: Must be between {min} and {max}, if provided."
        )))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ferry_types::AttributeValue;

    use super::*;

    fn attribute(data_type: &str, value: AttributeData) -> MessageAttributes {
        [(
            "a".to_string(),
            AttributeValue {
                data_type: data_type.into(),
                value,
            },
        )]
        .into()
    }

    #[test]
    fn bodies_follow_the_xml_character_set_and_size() {
        let check = |body: &str, sending| check_message(body, &Default::default(), 1024, sending);
        assert_eq!(
            check("hi\u{1}", Sending::Alone).unwrap_err().code,
            ErrorCode::InvalidMessageContents
        );
        let too_long = check(&"x".repeat(1025), Sending::Alone).unwrap_err();
        assert_eq!(too_long.code, ErrorCode::InvalidParameterValue);
        assert_eq!(
            too_long.message,
            "One or more parameters are invalid. Reason: Message must be shorter than 1024 bytes."
        );
        assert_eq!(
            check(&"x".repeat(1025), Sending::InBatch).unwrap_err().message,
            "One or more parameters cannot be validated. Reason: Message must be shorter than 1024 bytes."
        );
        assert_eq!(check("ok \u{10000}", Sending::Alone).unwrap(), 7);
    }

    #[test]
    fn text_checks_follow_the_xml_character_set_on_both_paths() {
        let ascii = (0u8..0x80).map(char::from);
        let edges = [
            '\u{D7FF}',
            '\u{E000}',
            '\u{FFFD}',
            '\u{FFFE}',
            '\u{FFFF}',
            '\u{10000}',
            '\u{10FFFF}',
        ];
        for c in ascii.chain(edges) {
            // Alone and in non-ASCII text, so both the byte scan and the character scan see it.
            for text in [format!("ab{c}cd"), format!("é{c}")] {
                assert_eq!(
                    check_text(&text, "text").is_ok(),
                    allowed_char(c),
                    "{:#x} in {text:?}",
                    c as u32
                );
            }
        }
    }

    #[test]
    fn attributes_need_matching_types() {
        let number = attribute("Number.float", AttributeData::String("4.5e3".into()));
        assert!(check_attributes(&number).is_ok());
        let not_number = attribute("Number", AttributeData::String("four".into()));
        assert!(check_attributes(&not_number).is_err());
        let binary_as_string = attribute("Binary", AttributeData::String("x".into()));
        assert!(check_attributes(&binary_as_string).is_err());
        let binary = attribute(
            "Binary",
            AttributeData::Binary(Bytes::from_static(b"\x00\x01")),
        );
        assert_eq!(check_attributes(&binary).unwrap(), 1 + 6 + 2);
        let bad_type = attribute("Blob", AttributeData::String("x".into()));
        assert!(check_attributes(&bad_type).is_err());
    }

    #[test]
    fn batch_ids_are_checked() {
        assert_eq!(
            check_batch_ids([].into_iter()).unwrap_err().code,
            ErrorCode::EmptyBatchRequest
        );
        assert_eq!(
            check_batch_ids(["a", "a"].into_iter()).unwrap_err().code,
            ErrorCode::BatchEntryIdsNotDistinct
        );
        assert_eq!(
            check_batch_ids(["a b"].into_iter()).unwrap_err().code,
            ErrorCode::InvalidBatchEntryId
        );
        let many: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert_eq!(
            check_batch_ids(many.iter().map(String::as_str))
                .unwrap_err()
                .code,
            ErrorCode::TooManyEntriesInBatchRequest
        );
    }
}

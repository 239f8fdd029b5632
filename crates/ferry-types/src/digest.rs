use md5::{Digest, Md5};

use crate::{AttributeData, MessageAttributes};

/// Lower-case hex MD5, as SQS reports MD5OfMessageBody.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// MD5OfMessageAttributes exactly as the AWS SDKs verify it: names in ascending order, each as
/// length-prefixed name, length-prefixed data type, a transport byte (1 = string, 2 = binary) and the
/// length-prefixed value. `None` when there are no attributes: SQS omits the field then.
pub fn md5_of_message_attributes(attributes: &MessageAttributes) -> Option<String> {
    if attributes.is_empty() {
        return None;
    }
    fn put(hasher: &mut Md5, bytes: &[u8]) {
        hasher.update((bytes.len() as u32).to_be_bytes());
        hasher.update(bytes);
    }
    let mut hasher = Md5::new();
    for (name, value) in attributes {
        put(&mut hasher, name.as_bytes());
        put(&mut hasher, value.data_type.as_bytes());
        match &value.value {
            AttributeData::String(text) => {
                hasher.update([1u8]);
                put(&mut hasher, text.as_bytes());
            }
            AttributeData::Binary(bytes) => {
                hasher.update([2u8]);
                put(&mut hasher, bytes);
            }
        }
    }
    Some(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AttributeValue;

    fn string(data_type: &str, value: &str) -> AttributeValue {
        AttributeValue {
            data_type: data_type.into(),
            value: AttributeData::String(value.into()),
        }
    }

    // Vectors from SQS-REFERENCE.md §1.5.
    #[test]
    fn attribute_digests_match_the_sdk_vectors() {
        let mut all = MessageAttributes::new();
        all.insert("attribName1".into(), string("String", "attribValue 1"));
        let one = all.clone();
        assert_eq!(
            md5_of_message_attributes(&one).unwrap(),
            "19e27d4e946b072f3f58da80d94fd778"
        );

        let mut number = MessageAttributes::new();
        number.insert(
            "customNumberTypeAttrib".into(),
            string("Number.float", "4563442423554324324264524243.32543234"),
        );
        assert_eq!(
            md5_of_message_attributes(&number).unwrap(),
            "9fe1b90bbd9965bdf77bac517c7d2495"
        );

        let mut binary = MessageAttributes::new();
        binary.insert(
            "binaryAttribute".into(),
            AttributeValue {
                data_type: "Binary".into(),
                value: AttributeData::Binary(bytes::Bytes::from_static(b"Hello binary world!")),
            },
        );
        assert_eq!(
            md5_of_message_attributes(&binary).unwrap(),
            "31a92b15d92f8db860eda32aceb656c3"
        );

        all.extend(number);
        all.extend(binary);
        assert_eq!(
            md5_of_message_attributes(&all).unwrap(),
            "c932db14a896c663f83c260297d594ff"
        );
        assert_eq!(md5_of_message_attributes(&MessageAttributes::new()), None);
    }

    #[test]
    fn body_digest_matches_the_reference() {
        assert_eq!(
            md5_hex(b"this is a test of the GoAws Queue messaging"),
            "9d3f5eaac3b1b4dd509f39e71e25f954"
        );
    }
}

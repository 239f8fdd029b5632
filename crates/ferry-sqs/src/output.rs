//! An action's result as one tree that renders to both wire formats: JSON objects and arrays, or
//! the Query protocol's XML with its flattened lists and `<Name>/<Value>` maps.

/// A value of a result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Number(u64),
    Bool(bool),
    Struct(Fields),
    /// A JSON array; in XML, flattened: one `<item>` element per value and no wrapper.
    List {
        item: &'static str,
        values: Vec<Value>,
    },
    /// A JSON object; in XML, flattened: one `<entry><key>k</key><Value>v</Value></entry>` per pair.
    Map {
        entry: &'static str,
        key: &'static str,
        pairs: Vec<(String, Value)>,
    },
}

/// The members of a structure, in the order the XML lists them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(pub Vec<(&'static str, Value)>);

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &'static str, value: Value) -> Self {
        self.0.push((name, value));
        self
    }

    pub fn text(self, name: &'static str, text: impl Into<String>) -> Self {
        self.with(name, Value::Text(text.into()))
    }

    /// A member that is left out when absent.
    pub fn maybe_text(self, name: &'static str, text: Option<impl Into<String>>) -> Self {
        match text {
            Some(text) => self.text(name, text),
            None => self,
        }
    }

    pub fn number(self, name: &'static str, number: u64) -> Self {
        self.with(name, Value::Number(number))
    }

    pub fn maybe_number(self, name: &'static str, number: Option<u64>) -> Self {
        match number {
            Some(number) => self.number(name, number),
            None => self,
        }
    }

    pub fn bool(self, name: &'static str, value: bool) -> Self {
        self.with(name, Value::Bool(value))
    }

    /// A list member; `item` names each element in XML.
    pub fn list(self, name: &'static str, item: &'static str, values: Vec<Value>) -> Self {
        self.with(name, Value::List { item, values })
    }

    /// A list member that is left out when empty (SQS omits empty optional lists).
    pub fn nonempty_list(self, name: &'static str, item: &'static str, values: Vec<Value>) -> Self {
        if values.is_empty() {
            self
        } else {
            self.list(name, item, values)
        }
    }

    /// A map of strings, left out when empty; in XML `<entry><key>k</key><Value>v</Value></entry>`.
    pub fn string_map(
        self,
        name: &'static str,
        entry: &'static str,
        key: &'static str,
        pairs: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let pairs: Vec<(String, Value)> = pairs
            .into_iter()
            .map(|(k, v)| (k, Value::Text(v)))
            .collect();
        self.map(name, entry, key, pairs)
    }

    /// A map member, left out when empty.
    pub fn map(
        self,
        name: &'static str,
        entry: &'static str,
        key: &'static str,
        pairs: Vec<(String, Value)>,
    ) -> Self {
        if pairs.is_empty() {
            self
        } else {
            self.with(name, Value::Map { entry, key, pairs })
        }
    }
}

//! JSON parsing that rejects a key repeated in one object, shared by the HTTP request reader and
//! the JSONL readers of the command line.
//!
//! `serde_json` keeps the last value of a repeated key, while a proxy, a log or another reader of
//! the same text may keep the first, so the text classified could differ from the text they saw.

use std::borrow::Cow;
use std::cell::RefCell;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Reason a text is not accepted as JSON.
#[derive(Debug)]
pub enum ParseError {
    /// An object repeats a key.
    DuplicateKey(DuplicateKey),
    /// The text is not valid JSON, or it nests deeper than `serde_json`'s recursion limit.
    Syntax(serde_json::Error),
}

/// A key repeated in one object, and where its second occurrence ends.
#[derive(Debug)]
pub struct DuplicateKey {
    /// The key as written. It may be message text: use [`DuplicateKey::known_field`] for error
    /// messages.
    key: String,
    /// Whether the object is the top-level value, as opposed to one nested in it.
    top_level: bool,
    /// Line of the error, counted from 1.
    pub line: usize,
    /// Column of the error in that line, counted from 1.
    pub column: usize,
}

impl DuplicateKey {
    /// Returns the key when the top-level object repeats it and it is one of `fields`, or `None`.
    ///
    /// Error messages may quote only the returned name. Any other key may be message text put
    /// in a key by mistake, and a nested key is not the field that it may share a name with.
    pub fn known_field<'a>(&self, fields: &[&'a str]) -> Option<&'a str> {
        if !self.top_level {
            return None;
        }
        fields.iter().copied().find(|field| *field == self.key)
    }

    /// Describes the repeated key for an error message, naming it only as
    /// [`DuplicateKey::known_field`] allows.
    pub fn describe(&self, fields: &[&str]) -> String {
        let column = self.column;
        match self.known_field(fields) {
            Some(field) => format!("field `{field}` appears twice (the second ends at column {column})"),
            None => format!("a key appears twice in one object (the second ends at column {column})"),
        }
    }
}

/// Parses a JSON text into a value whose objects have no repeated key.
///
/// A lone UTF-16 surrogate escape becomes U+FFFD, as [`replace_lone_surrogates`] explains.
/// Trailing characters other than whitespace are a syntax error, as in `serde_json::from_str`.
pub fn from_str(text: &str) -> Result<Value, ParseError> {
    let text = replace_lone_surrogates(text);
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    let parsed = UniqueKeys { depth: 0, duplicate: &duplicate }
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    parsed.map_err(|error| match duplicate.into_inner() {
        Some((key, depth)) => {
            ParseError::DuplicateKey(DuplicateKey { key, top_level: depth == 0, line: error.line(), column: error.column() })
        }
        None => ParseError::Syntax(error),
    })
}

/// Rewrites each `\uXXXX` escape of a lone UTF-16 surrogate as `\uFFFD`, the replacement
/// character, and leaves the text unchanged otherwise.
///
/// JSON (RFC 8259) allows such an escape, and a JavaScript client sends one when it cuts a
/// message inside an emoji, but `serde_json` rejects it. The message is then read with U+FFFD
/// in place of the cut emoji. Both escapes are six characters long, so error columns still
/// point into the original text.
fn replace_lone_surrogates(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let surrogate_at = |index: usize| -> Option<u16> {
        let escape = bytes.get(index..index + 6)?;
        if escape[0] != b'\\' || escape[1] != b'u' {
            return None;
        }
        let code = u16::from_str_radix(std::str::from_utf8(&escape[2..]).ok()?, 16).ok()?;
        (0xD800..=0xDFFF).contains(&code).then_some(code)
    };
    let mut lone = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != b'\\' {
            index += 1;
            continue;
        }
        match surrogate_at(index) {
            // A high surrogate followed by a low one is a valid pair.
            Some(0xD800..=0xDBFF) if surrogate_at(index + 6).is_some_and(|low| low >= 0xDC00) => index += 12,
            Some(_) => {
                lone.push(index);
                index += 6;
            }
            // Any other escape, such as `\\`, is two characters, so its second one never starts
            // an escape.
            None => index += 2,
        }
    }
    if lone.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut fixed = String::with_capacity(text.len());
    let mut copied = 0;
    for start in lone {
        fixed.push_str(&text[copied..start]);
        fixed.push_str("\\uFFFD");
        copied = start + 6;
    }
    fixed.push_str(&text[copied..]);
    Cow::Owned(fixed)
}

/// Message of the error that stops parsing at a repeated key. [`from_str`] identifies this
/// error by the key it records, not by this message.
const DUPLICATE_KEY: &str = "duplicate key";

/// Deserializes a value at nesting `depth`, and records the first repeated key in `duplicate`
/// with the depth of its object.
struct UniqueKeys<'a> {
    depth: usize,
    duplicate: &'a RefCell<Option<(String, usize)>>,
}

impl UniqueKeys<'_> {
    fn nested(&self) -> Self {
        UniqueKeys { depth: self.depth + 1, duplicate: self.duplicate }
    }
}

impl<'de> DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.nested())? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some((key, self.depth));
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
            let value = access.next_value_seed(self.nested())?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let text = |value: Value| value["text"].as_str().unwrap().to_string();
        let cases = [
            (r#"{"text":"je suis triste \ud83d"}"#, "je suis triste \u{FFFD}"),
            (r#"{"text":"\ude2d fin"}"#, "\u{FFFD} fin"),
            (r#"{"text":"\ud83d\ud83d\ude2d"}"#, "\u{FFFD}😭"),
            (r#"{"text":"ok \ud83d\ude2d"}"#, "ok 😭"),
            (r#"{"text":"a\\ud83d"}"#, "a\\ud83d"),
            (r#"{"text":"é \ud83d"}"#, "é \u{FFFD}"),
        ];
        for (json, expected) in cases {
            let value = from_str(json).unwrap_or_else(|error| panic!("{json}: {error:?}"));
            assert_eq!(text(value), expected, "{json}");
        }
        assert!(matches!(replace_lone_surrogates(r#"{"text":"ok \ud83d\ude2d"}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn column_survives_surrogate_rewrite() {
        let Err(ParseError::Syntax(error)) = from_str(r#"{"text":"\ud83d", x}"#) else { panic!("parsed") };
        assert_eq!((error.line(), error.column()), (1, 19));
    }

    fn duplicate(text: &str) -> DuplicateKey {
        match from_str(text) {
            Err(ParseError::DuplicateKey(duplicate)) => duplicate,
            other => panic!("not a duplicate key: {other:?}"),
        }
    }

    #[test]
    fn parses_values_like_serde_json() {
        let text = r#"{"a": [1, -2, 2.5, true, null, {"b": "c"}], "d": {}, "e": "é\n"}"#;
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(from_str(text).unwrap(), expected);
        assert_eq!(from_str(" [] ").unwrap(), json!([]));
    }

    #[test]
    fn repeated_top_level_field_is_named() {
        let repeated = duplicate(r#"{"text": "a", "id": 1, "text": "b"}"#);
        assert_eq!(repeated.known_field(&["id", "text"]), Some("text"));
        assert_eq!((repeated.line, repeated.column), (1, 29));
        assert_eq!(repeated.describe(&["id", "text"]), "field `text` appears twice (the second ends at column 29)");
    }

    #[test]
    fn unknown_or_nested_key_is_not_named() {
        let unknown = duplicate(r#"{"j'ai peur": 1, "j'ai peur": 2}"#);
        assert_eq!(unknown.known_field(&["id", "text"]), None);
        assert_eq!(unknown.describe(&["id", "text"]), "a key appears twice in one object (the second ends at column 28)");
        let nested = duplicate(r#"{"id": {"text": 1, "text": 2}, "text": "a"}"#);
        assert_eq!(nested.known_field(&["id", "text"]), None);
        let in_array = duplicate(r#"{"inputs": [{"text": "a", "text": "b"}]}"#);
        assert_eq!(in_array.known_field(&["inputs", "text"]), None);
    }

    #[test]
    fn same_key_in_two_objects_is_accepted() {
        let value = from_str(r#"{"a": {"text": 1}, "b": {"text": 2}, "text": 3}"#).unwrap();
        assert_eq!(value["b"]["text"], 2);
    }

    #[test]
    fn syntax_errors_stay_syntax_errors() {
        for text in [r#"{"text": "a""#, r#"{"text": "a"} x"#, "", r#"{"text": }"#] {
            assert!(matches!(from_str(text), Err(ParseError::Syntax(_))), "{text:?}");
        }
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(matches!(from_str(&deep), Err(ParseError::Syntax(_))));
    }
}

//! The line formats: a JSON object per line, nginx's `combined`, or an
//! operator's template of `$field` names and literal text.

use std::fmt::Write as _;

use super::record::{Field, Record, Value};

/// nginx's `combined` format, in this log's field names.
const COMBINED: &str =
    "$remote_addr - - [$time_local] \"$request\" $status $bytes_sent \"$referer\" \"$user_agent\"";

/// How records become lines.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    Json,
    Text(Vec<Piece>),
}

/// A part of a text format.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Literal(String),
    Field(Field),
}

/// A template names a field that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log field `${name}`; known fields: {known}")]
pub struct UnknownField {
    pub name: String,
    pub known: String,
}

impl Format {
    /// `json`, `combined`, or a template such as
    /// `$remote_addr "$request" $status $duration_ms`.
    pub fn parse(text: &str) -> Result<Format, UnknownField> {
        match text {
            "json" => Ok(Format::Json),
            "combined" => Format::template(COMBINED),
            template => Format::template(template),
        }
    }

    fn template(text: &str) -> Result<Format, UnknownField> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            if at > 0 {
                pieces.push(Piece::Literal(rest[..at].to_owned()));
            }
            let after = &rest[at + 1..];
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..len];
            let field = Field::named(name).ok_or_else(|| UnknownField {
                name: name.to_owned(),
                known: Field::JSON
                    .into_iter()
                    .chain([Field::Request, Field::TimeLocal])
                    .map(Field::name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
            pieces.push(Piece::Field(field));
            rest = &after[len..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok(Format::Text(pieces))
    }

    /// `record` as one line, newline included.
    pub fn render(&self, record: &Record) -> Vec<u8> {
        let mut line = String::with_capacity(512);
        match self {
            Format::Json => {
                let mut line = Vec::with_capacity(640);
                render_json(record, &mut line);
                line.push(b'\n');
                return line;
            }
            Format::Text(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Literal(text) => line.push_str(text),
                        Piece::Field(field) => match record.value(*field) {
                            Some(value) => write_text(&mut line, &value),
                            None => line.push('-'),
                        },
                    }
                }
            }
        }
        line.push('\n');
        line.into_bytes()
    }
}

/// Writes `{"time":…,…}`: fields that do not apply are left out, and
/// strings are escaped by serde_json, so the line is valid JSON whatever
/// the client sent (control characters become `\u00XX`).
fn render_json(record: &Record, line: &mut Vec<u8>) {
    line.push(b'{');
    for field in Field::JSON {
        let Some(value) = record.value(field) else {
            continue;
        };
        if line.len() > 1 {
            line.push(b',');
        }
        line.push(b'"');
        line.extend_from_slice(field.name().as_bytes());
        line.extend_from_slice(b"\":");
        match value {
            Value::Text(text) => push_json_string(line, &text),
            Value::Number(_) | Value::Millis(_) => {
                let _ = value.write_plain(&mut Utf8(line));
            }
            // Strings whose characters never need escaping.
            Value::Time(_) | Value::Ip(_) | Value::Socket(_) => {
                line.push(b'"');
                let _ = value.write_plain(&mut Utf8(line));
                line.push(b'"');
            }
        }
    }
    line.push(b'}');
}

/// `fmt::Write` into a byte line, so plain values are written in place.
struct Utf8<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.extend_from_slice(text.as_bytes());
        Ok(())
    }
}

fn push_json_string(line: &mut Vec<u8>, text: &str) {
    // Writing a &str into a Vec cannot fail; the fallback keeps the line valid anyway.
    if serde_json::to_writer(&mut *line, text).is_err() {
        line.extend_from_slice(b"\"\"");
    }
}

/// A value in a text line. Control characters (a CR or LF in a hostile
/// header would forge a second line) and `"` are escaped as `\xHH`, as
/// nginx does.
fn write_text(line: &mut String, value: &Value<'_>) {
    match value {
        Value::Text(text) => {
            for c in text.chars() {
                if c.is_control() || c == '"' || c == '\\' {
                    let _ = write!(line, "\\x{:02X}", u32::from(c) & 0xFF);
                } else {
                    line.push(c);
                }
            }
        }
        other => {
            let _ = other.write_plain(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record() -> Record {
        Record {
            host: Some("example.com".into()),
            path: "/a\"b\n\u{1}é".into(),
            bytes_sent: 5,
            duration: Duration::from_micros(1500),
            route: Some("site".into()),
            user_agent: Some("curl/8".into()),
            ..Record::example()
        }
    }

    #[test]
    fn json_lines_are_valid_and_leave_out_what_does_not_apply() {
        let line = Format::Json.render(&record());
        let text = String::from_utf8(line).expect("utf-8");
        assert!(text.ends_with("}\n"), "{text}");
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(parsed["path"], "/a\"b\n\u{1}é");
        assert_eq!(parsed["status"], 200);
        assert_eq!(parsed["duration_ms"], 1.5);
        assert_eq!(parsed["time"], "2026-12-04T17:40:00.123Z");
        assert!(parsed.get("backend").is_none(), "absent, not empty: {text}");
        assert!(parsed.get("referer").is_none());
    }

    #[test]
    fn combined_is_nginx_s_line_with_hostile_bytes_escaped() {
        let format = Format::parse("combined").expect("combined");
        let line = String::from_utf8(format.render(&record())).expect("utf-8");
        assert_eq!(
            line,
            "127.0.0.1 - - [04/Dec/2026:17:40:00 +0000] \"GET /a\\x22b\\x0A\\x01é HTTP/1.1\" 200 5 \"-\" \"curl/8\"\n"
        );
    }

    #[test]
    fn templates_name_fields_and_unknown_names_are_refused() {
        let format = Format::parse("$route $status [$duration_ms ms] $backend").expect("valid");
        let line = String::from_utf8(format.render(&record())).expect("utf-8");
        assert_eq!(line, "site 200 [1.500 ms] -\n");
        let error = Format::parse("$status $stauts").expect_err("typo");
        assert_eq!(error.name, "stauts");
        assert!(error.to_string().contains("known fields: time, type"));
    }
}

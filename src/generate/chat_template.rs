//! Chat templates: the Jinja program stored in a GGUF (`tokenizer.chat_template`) that turns
//! a conversation into the prompt text the model was trained on.
//!
//! Templates are written for Hugging Face's Python Jinja2, so the environment mimics it:
//! `trim_blocks` and `lstrip_blocks` on, Python string methods (`.strip()`,
//! `.startswith()`...), `raise_exception`, `strftime_now`, and a `tojson` without HTML
//! escaping.

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("chat template does not compile: {0}")]
    Compile(#[source] Error),
    #[error("chat template failed to render: {0}")]
    Render(#[source] Error),
    /// The template itself rejected the conversation through `raise_exception`.
    #[error("chat template rejected the conversation: {0}")]
    Raised(String),
}

const NAME: &str = "chat";

/// A compiled chat template, or the plain fallback. Compiled once, rendered per request;
/// `Send + Sync` so that a server can share it.
pub struct ChatTemplate {
    kind: Kind,
}

enum Kind {
    Jinja {
        env: Box<Environment<'static>>,
        bos: String,
        eos: String,
    },
    Plain,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Plain => f.write_str("ChatTemplate(plain)"),
            Kind::Jinja { bos, eos, .. } => f
                .debug_struct("ChatTemplate")
                .field("bos", bos)
                .field("eos", eos)
                .finish_non_exhaustive(),
        }
    }
}

impl ChatTemplate {
    /// Compile `source`. `bos_token` and `eos_token` are the texts of those special tokens,
    /// which many templates print.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_string())
            .map_err(TemplateError::Compile)?;
        Ok(ChatTemplate {
            kind: Kind::Jinja {
                env: Box::new(env),
                bos: bos_token.to_string(),
                eos: eos_token.to_string(),
            },
        })
    }

    /// Fallback for models without a template (base models). The prompt is every message's
    /// content followed by a blank line (`"\n\n"`), with no roles and no special tokens;
    /// `add_generation_prompt` adds nothing. So a single message `m` renders as `"m\n\n"`,
    /// and a rendered conversation plus the model's reply is a prefix of the next render.
    pub fn plain() -> Self {
        ChatTemplate { kind: Kind::Plain }
    }

    /// Build from the GGUF's `tokenizer.chat_template`; `None` gives [`ChatTemplate::plain`].
    pub fn from_gguf_source(
        template: Option<&str>,
        bos: &str,
        eos: &str,
    ) -> Result<Self, TemplateError> {
        match template {
            Some(src) => ChatTemplate::new(src, bos, eos),
            None => Ok(ChatTemplate::plain()),
        }
    }

    /// Whether this is the plain fallback rather than the model's own template.
    pub fn is_plain(&self) -> bool {
        matches!(self.kind, Kind::Plain)
    }

    /// Render the conversation. With `add_generation_prompt` the text that opens the
    /// assistant's turn is appended, so the model's continuation is its reply.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        match &self.kind {
            Kind::Plain => Ok(messages
                .iter()
                .map(|m| format!("{}\n\n", m.content))
                .collect()),
            Kind::Jinja { env, bos, eos } => {
                let tmpl = env.get_template(NAME).map_err(TemplateError::Render)?;
                let ctx = minijinja::context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => bos,
                    eos_token => eos,
                };
                tmpl.render(ctx).map_err(|e| match raised_message(&e) {
                    Some(msg) => TemplateError::Raised(msg),
                    None => TemplateError::Render(e),
                })
            }
        }
    }
}

/// Marker that tells a `raise_exception` error apart from other render failures.
const RAISED: &str = "raise_exception: ";

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{msg}"),
    ))
}

/// The template's own message, when the error (or one it wraps) came from `raise_exception`.
fn raised_message(e: &Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(mj) = err.downcast_ref::<Error>() {
            if let Some(msg) = mj.detail().and_then(|d| d.strip_prefix(RAISED)) {
                return Some(msg.to_string());
            }
        }
        cur = err.source();
    }
    None
}

/// Python's `json.dumps` layout (`", "` and `": "` separators, or `indent`), which
/// transformers uses for `tojson`; unlike minijinja's own filter it does not HTML-escape.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = |e: serde_json::Error| Error::new(ErrorKind::InvalidOperation, e.to_string());
    let mut out = Vec::new();
    match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(value, &mut ser).map_err(json)?;
        }
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
            serde::Serialize::serialize(value, &mut ser).map_err(json)?;
        }
    }
    Ok(Value::from_safe_string(
        String::from_utf8(out).expect("serde_json writes UTF-8"),
    ))
}

/// Compact JSON with Python's default separators.
struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// `strftime_now(format)` (used by Llama 3 templates for the date), in UTC. Supports
/// `%Y %y %m %d %e %H %M %S %b %B %a %A %j %%`; other directives are kept as written.
fn strftime_now(format: String) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&format, secs)
}

fn strftime(format: &str, unix: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix.div_euclid(86_400);
    let sod = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('H') => out.push_str(&format!("{:02}", sod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", sod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", sod % 60)),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_known_instants() {
        // 2024-02-29 13:05:09 UTC, a Thursday (leap day).
        let t = 1_709_211_909;
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", t), "2024-02-29 13:05:09");
        assert_eq!(
            strftime("%d %b %Y, %A %j %%", t),
            "29 Feb 2024, Thursday 060 %"
        );
        assert_eq!(strftime("%a %B %e %y %q", 0), "Thu January  1 70 %q");
        assert_eq!(days_from_civil(2024, 2, 29), 1_709_211_909 / 86_400);
    }
}

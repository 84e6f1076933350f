//! Redaction of secrets and personal data from every string that reaches an event.
//!
//! Built-in patterns (applied in this order), each replaced by `[REDACTED:<kind>]`;
//! a marker already in the text is never replaced again:
//!
//! | kind | matches |
//! |---|---|
//! | `pem` | PEM private key blocks (`-----BEGIN ... PRIVATE KEY-----` to its END, or to the end of the text if cut) |
//! | `jwt` | three base64url segments starting `eyJ` |
//! | `bearer` | the token after `Bearer ` (the word `Bearer` is kept) |
//! | `basic` | the credentials after `Basic ` |
//! | `authorization` | the credentials of an `Authorization:` (or `Proxy-Authorization:`) value, after a scheme word if any (`Token`, `Digest`, `Splunk`, `SSWS`, `ApiKey` ...; `Bearer` and `Basic` keep their own kinds) |
//! | `url_password` | the password in `scheme://user:password@host` (user kept) |
//! | `aws_access_key` | AWS access key IDs (`AKIA...`, `ASIA...` and the other 4-letter prefixes) |
//! | `aws_secret` | the value after an `aws_secret_access_key`-like key; and 40 base64 characters written right after an access key ID (`AKIA... wJalr...`, `AKIA...:wJalr...`, `AKIA...,wJalr...`) |
//! | `slack` | Slack tokens `xox?-...` (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`, `xoxe-` ...) |
//! | `github` | GitHub tokens `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` and fine-grained `github_pat_` |
//! | `secret` | the whole value after a `password`, `passwd`, `pwd`, `secret`, `token`, `api_key`, `access_key` key (`=` or `:`, spaces around them; `client_secret`, `X-Api-Key` ...): a double- or single-quoted value with its spaces (escaped quotes too) or a bracketed value (`[Hunter2Secret]`), each with the quoted parts and word characters glued after it (`'ab'cd`), or a bare word |
//! | `email` | e-mail addresses |
//! | `custom` | each extra pattern given to [`Redactor::with_extra`], matched between markers only |
//! | `unstable` | the whole text, when redaction has not settled after [`REDACT_PASSES_MAX`] passes (fail closed; no input is known to do this) |
//!
//! [`Redactor::redact_line`] is what every stored, logged or model-shown string
//! gets: the text is made one line *first* (a run of white space becomes one
//! space; control characters, which JSON escapes such as `\b` and `\u0000`
//! decode to, and invisible format characters such as zero-width spaces and
//! joiners, bidi marks, soft hyphens and variation selectors are removed), then
//! redacted, so no later transformation can re-form a secret: the result is a
//! fixed point of [`Redactor::redact`] (the `normalizer` fuzz target's
//! invariant). An invisible character may hide a secret either way: standing
//! between `Bearer` and its token (it separates them) or inside an access key
//! (it splits it). So a text that holds one is redacted twice: once with each
//! run of them read as a space, then once more with them removed.
//!
//! The regexes are compiled once; a `Redactor` is cheap to clone and share.
//! Redaction errs on the side of removing too much: a false positive costs a
//! word of context, a false negative leaks a credential to a model and to logs.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use regex::Regex;

/// Extra patterns a [`Redactor`] accepts.
pub const EXTRA_PATTERNS_MAX: usize = 64;
/// Bytes of one extra pattern's source.
pub const EXTRA_PATTERN_BYTES_MAX: usize = 1024;
/// Compiled size of one extra pattern (regex's own bound on program size).
pub const EXTRA_PATTERN_COMPILED_BYTES_MAX: usize = 1024 * 1024;
/// Passes of every rule [`Redactor::redact`] makes before it gives up on
/// reaching a fixed point and replaces the text whole.
pub const REDACT_PASSES_MAX: usize = 8;

/// What an extra pattern's match becomes.
const CUSTOM: &str = "[REDACTED:custom]";
/// What a text becomes whose redaction does not settle.
const UNSTABLE: &str = "[REDACTED:unstable]";

struct Rule {
    kind: &'static str,
    regex: Regex,
    /// Replacement template (`$keep` keeps the named capture).
    replacement: &'static str,
}

const BUILTIN_SOURCES: &[(&str, &str, &str)] = &[
    (
        "pem",
        r"(?s)-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\z)",
        "[REDACTED:pem]",
    ),
    (
        "jwt",
        r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
        "[REDACTED:jwt]",
    ),
    (
        "bearer",
        r"(?i)(?P<keep>\bbearer\s+)[A-Za-z0-9._~+/=-]+",
        "${keep}[REDACTED:bearer]",
    ),
    (
        "basic",
        r"(?i)(?P<keep>\bbasic\s+)[A-Za-z0-9+/]{8,}=*",
        "${keep}[REDACTED:basic]",
    ),
    (
        "authorization",
        r#"(?i)(?P<keep>\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:(?:token|bearer|basic|digest|negotiate|apikey|api-key|key|sso-key|splunk|ssws|dsn)\s+)?)[^\s"',;&]+"#,
        "${keep}[REDACTED:authorization]",
    ),
    (
        "url_password",
        r"(?i)(?P<keep>\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@",
        "${keep}[REDACTED:url_password]@",
    ),
    (
        "aws_access_key",
        r"(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA|APKA)[A-Z0-9]{16}",
        "[REDACTED:aws_access_key]",
    ),
    (
        "aws_secret",
        r#"(?i)(?P<keep>aws_?secret(?:_?access)?_?key["']?\s*[:=]\s*["']?)[^\s"',;&]+"#,
        "${keep}[REDACTED:aws_secret]",
    ),
    (
        // A secret access key (40 base64 characters) written next to its key
        // id, which the `aws_access_key` rule has just replaced:
        // `AKIA... wJalr...`, `AKIA...:wJalr...`, CSV `AKIA...,wJalr...`.
        "aws_secret",
        r#"(?P<keep>\[REDACTED:aws_access_key\]["']?[\s:,;=|/"']{1,6})[A-Za-z0-9/+]{40}"#,
        "${keep}[REDACTED:aws_secret]",
    ),
    ("slack", r"\bxox[a-z]-[A-Za-z0-9-]{8,}", "[REDACTED:slack]"),
    (
        "github",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
        "[REDACTED:github]",
    ),
    (
        // The whole value: double- or single-quoted (spaces and escaped
        // quotes inside, `\"` quoting too) or bracketed, with every quoted
        // part and word character glued after it (`'ab'cd`, `"ab"'cd'`: one
        // shell word); or a bare word. Taking the glued rest is what keeps
        // redaction idempotent: a marker with a word glued to it would be a
        // bracketed value to the next pass.
        "secret",
        r#"(?i)(?P<keep>[a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)(?:\\?["'])?\s*[:=]\s*)(?:(?:\\?"(?:[^"\\]|\\[^"])*(?:\\?")?|\\?'(?:[^'\\]|\\[^'])*(?:\\?')?|\[[^\]]*\]?)(?:[A-Za-z0-9_+/=~-]|\\?"(?:[^"\\]|\\[^"])*(?:\\?")?|\\?'(?:[^'\\]|\\[^'])*(?:\\?')?)*|[^\s"',;&]+)"#,
        "${keep}[REDACTED:secret]",
    ),
    (
        "email",
        r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        "[REDACTED:email]",
    ),
];

#[expect(
    clippy::expect_used,
    reason = "built-in patterns are constants; redact::tests::builtins_compile proves they compile"
)]
static BUILTINS: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    BUILTIN_SOURCES
        .iter()
        .map(|(kind, source, replacement)| Rule {
            kind,
            regex: Regex::new(source).expect("built-in redaction pattern compiles"),
            replacement,
        })
        .collect()
});

/// Every built-in pattern at once: a text none of them matches anywhere is
/// left as it is by every built-in rule, so most texts (no secret) cost one
/// scan instead of one per rule. Same patterns, same matches: a prefilter only.
#[expect(
    clippy::expect_used,
    reason = "the built-in patterns are constants; redact::tests::builtins_compile proves they compile"
)]
static BUILTIN_SET: LazyLock<regex::RegexSet> = LazyLock::new(|| {
    regex::RegexSet::new(BUILTIN_SOURCES.iter().map(|(_, source, _)| *source))
        .expect("built-in redaction patterns compile as a set")
});

/// A run of separators: white space, control characters (what JSON escapes
/// such as `\b`, `\f` and `\u0000` decode to) and default-ignorable code
/// points (zero-width space and joiners, bidi marks and isolates, soft hyphen,
/// word joiner, byte order mark, variation selectors, tag characters).
#[expect(
    clippy::expect_used,
    reason = "a constant pattern; redact::tests::separators_are_flattened runs it"
)]
static SEPARATORS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[\s\p{Cc}\p{Default_Ignorable_Code_Point}]+").expect("separator pattern compiles")
});

/// Stands for a run of invisible characters during the first pass: white
/// space to every rule (so it separates `Bearer` from its token), never
/// produced otherwise (every white space run becomes `' '`), and removed
/// before the second pass.
const INVISIBLE: &str = "\u{2002}";

/// `text` as one line: a separator run holding white space becomes one
/// space, a run of control and invisible characters only becomes
/// [`INVISIBLE`]; the ends are trimmed.
fn flatten(text: &str) -> String {
    let flat = SEPARATORS.replace_all(text, |c: &regex::Captures<'_>| {
        let run = c.get(0).map_or("", |m| m.as_str());
        if run.chars().any(char::is_whitespace) {
            " "
        } else {
            INVISIBLE
        }
    });
    flat.trim_matches(|c: char| c == ' ' || INVISIBLE.contains(c))
        .to_owned()
}

/// Removes [`INVISIBLE`]. Where one touches a redaction marker of the first
/// pass it becomes a space (`Bearer [REDACTED:bearer]`), and the word glued
/// after such a marker is dropped: the marker's secret may have gone on past
/// the invisible character (`Bearer AKIAIOSF\u{ad}ODNN7EXAMPLE`: the bearer
/// rule took `AKIAIOSF`, the second pass would no longer see a key in
/// `ODNN7EXAMPLE`).
fn join(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((before, after)) = rest.split_once(INVISIBLE) {
        out.push_str(before);
        rest = after;
        if ends_with_marker(&out) {
            push_space(&mut out);
            let word = rest.find([' ', '\u{2002}']).unwrap_or(rest.len());
            rest = rest.get(word..).unwrap_or_default();
            rest = rest.strip_prefix(' ').unwrap_or(rest);
        } else if rest.starts_with("[REDACTED:") {
            push_space(&mut out);
        }
    }
    out.push_str(rest);
    out.truncate(out.trim_end_matches(' ').len());
    out
}

/// One space, never two (a dropped word between two markers).
fn push_space(out: &mut String) {
    if !out.is_empty() && !out.ends_with(' ') {
        out.push(' ');
    }
}

/// A `[REDACTED:<kind>]` marker anywhere in a text.
#[expect(
    clippy::expect_used,
    reason = "a constant pattern; redact::tests::extra_patterns_leave_markers_alone runs it"
)]
static MARKER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[REDACTED:[a-z_]+\]").expect("marker pattern compiles"));

/// `text` with each non-empty match of an extra pattern replaced by
/// [`CUSTOM`], looking only between markers: an extra pattern never touches
/// a marker (`secret\S*` would otherwise eat `secret]` out of
/// `[REDACTED:secret]`, and a pattern matching `[REDACTED:custom]` would
/// never settle). `None` when nothing changed.
fn replace_outside_markers(regex: &Regex, text: &str) -> Option<String> {
    if !regex.is_match(text) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut gap = |out: &mut String, part: &str| {
        // Empty matches would insert a marker between every character.
        let replaced = regex.replace_all(part, |c: &regex::Captures<'_>| match c.get(0) {
            Some(m) if !m.as_str().is_empty() => CUSTOM.to_owned(),
            _ => String::new(),
        });
        changed |= *replaced != *part;
        out.push_str(&replaced);
    };
    let mut last = 0;
    for marker in MARKER.find_iter(text) {
        gap(&mut out, text.get(last..marker.start()).unwrap_or_default());
        out.push_str(marker.as_str());
        last = marker.end();
    }
    gap(&mut out, text.get(last..).unwrap_or_default());
    changed.then_some(out)
}

/// `text` is exactly one `[REDACTED:<kind>]` marker.
fn is_marker(text: &str) -> bool {
    text.strip_prefix("[REDACTED:")
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|kind| kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
}

fn ends_with_marker(text: &str) -> bool {
    text.rsplit_once("[REDACTED:")
        .is_some_and(|(_, kind)| kind.ends_with(']') && !kind.contains([' ', '[']))
}

/// Why extra redaction patterns were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedactorError {
    #[error("{count} extra redaction patterns exceed EXTRA_PATTERNS_MAX ({EXTRA_PATTERNS_MAX})")]
    TooManyPatterns { count: usize },
    #[error(
        "extra redaction pattern #{index} of {bytes} bytes exceeds EXTRA_PATTERN_BYTES_MAX ({EXTRA_PATTERN_BYTES_MAX})"
    )]
    PatternTooLong { index: usize, bytes: usize },
    #[error("extra redaction pattern #{index} {pattern:?} is not a valid regex: {reason}")]
    InvalidPattern {
        index: usize,
        pattern: String,
        reason: String,
    },
}

/// Replaces secrets and personal data by `[REDACTED:<kind>]`.
#[derive(Clone, Default)]
pub struct Redactor {
    extra: Arc<Vec<Regex>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("builtin_kinds", &BUILTIN_SOURCES.len())
            .field("extra_patterns", &self.extra.len())
            .finish()
    }
}

impl Redactor {
    /// The built-in patterns only.
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// The built-in patterns plus `patterns` (regex syntax), each replaced
    /// by `[REDACTED:custom]`. An invalid pattern is an error naming it.
    pub fn with_extra(patterns: &[String]) -> Result<Redactor, RedactorError> {
        if patterns.len() > EXTRA_PATTERNS_MAX {
            return Err(RedactorError::TooManyPatterns {
                count: patterns.len(),
            });
        }
        let mut extra = Vec::with_capacity(patterns.len());
        for (index, pattern) in patterns.iter().enumerate() {
            if pattern.len() > EXTRA_PATTERN_BYTES_MAX {
                return Err(RedactorError::PatternTooLong {
                    index,
                    bytes: pattern.len(),
                });
            }
            let regex = regex::RegexBuilder::new(pattern)
                .size_limit(EXTRA_PATTERN_COMPILED_BYTES_MAX)
                .build()
                .map_err(|e| RedactorError::InvalidPattern {
                    index,
                    pattern: pattern.clone(),
                    reason: e.to_string(),
                })?;
            extra.push(regex);
        }
        Ok(Redactor {
            extra: Arc::new(extra),
        })
    }

    /// `text` with every match of every pattern replaced, repeated until
    /// nothing changes: the result is a fixed point of `redact`. One pass
    /// is not always enough, because a replacement can complete a match of
    /// an earlier rule (`x://u:token='a b'@h`: the `secret` rule removes the
    /// space that kept `url_password` from matching). A text without a
    /// secret costs one pass; one with secrets usually two. A text still
    /// changing after [`REDACT_PASSES_MAX`] passes (none is known) is
    /// replaced whole by `[REDACTED:unstable]`: redaction fails closed.
    pub fn redact(&self, text: &str) -> String {
        let mut current = match self.pass(text) {
            Cow::Borrowed(_) => return text.to_owned(),
            Cow::Owned(s) => s,
        };
        for _ in 1..REDACT_PASSES_MAX {
            let next = self.pass(&current);
            if *next == *current {
                return current;
            }
            current = next.into_owned();
        }
        UNSTABLE.to_owned()
    }

    /// Every rule once, in order: built-ins, then the extra patterns.
    fn pass<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out: Cow<'t, str> = Cow::Borrowed(text);
        let builtins: &[Rule] = if BUILTIN_SET.is_match(text) {
            &BUILTINS
        } else {
            &[]
        };
        for rule in builtins {
            let replaced = rule.regex.replace_all(&out, |c: &regex::Captures<'_>| {
                let whole = c.get(0).map_or("", |m| m.as_str());
                let keep = c.name("keep").map_or(0, |m| m.len());
                // INVARIANT: a marker is never redacted again, so its kind is
                // the first rule's.
                if whole.get(keep..).is_some_and(is_marker) {
                    return whole.to_owned();
                }
                let mut replacement = String::new();
                c.expand(rule.replacement, &mut replacement);
                replacement
            });
            if let Cow::Owned(s) = replaced {
                out = Cow::Owned(s);
            }
        }
        for regex in self.extra.iter() {
            if let Some(replaced) = replace_outside_markers(regex, &out) {
                out = Cow::Owned(replaced);
            }
        }
        out
    }

    /// `text` made one line, then redacted: what every string that is
    /// stored, logged or shown to a model gets (see the module docs). The
    /// result has no control, format or non-space white space characters and
    /// is a fixed point of [`Redactor::redact`]; cutting it (on a char
    /// boundary) cannot form a secret either, except a cut marker.
    pub fn redact_line(&self, text: &str) -> String {
        let flat = flatten(text);
        if !flat.contains(INVISIBLE) {
            return self.redact(&flat);
        }
        let split = self.redact(&flat);
        self.redact(&join(&split))
    }

    /// The kinds the built-in patterns report, in the order they are applied.
    pub fn builtin_kinds() -> impl Iterator<Item = &'static str> {
        BUILTINS.iter().map(|r| r.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        Redactor::new().redact(s)
    }

    #[test]
    fn separators_are_flattened() {
        let red = Redactor::new();
        assert_eq!(
            red.redact_line("  a\tb\r\n c\u{0}d\u{8} \u{1b}e  "),
            "a b cd e"
        );
        // Invisible characters alone join; next to white space they are one space.
        assert_eq!(
            red.redact_line("ab\u{200b}c\u{ad}d e \u{200d} f"),
            "abcd e f"
        );
        assert_eq!(
            red.redact_line("Bearer\u{200b}tok1 AKIAIOSF\u{ad}ODNN7EXAMPLE"),
            "Bearer [REDACTED:bearer] [REDACTED:aws_access_key]"
        );
        assert_eq!(
            red.redact_line("Bearer \u{8}c123tok"),
            "Bearer [REDACTED:bearer]"
        );
        assert!(!red.redact_line("x\u{2002}y").contains(INVISIBLE));
        // Found by redact_signature: two markers around a dropped word left two spaces.
        assert_eq!(
            red.redact_line("a@example.cob\u{0}x1\u{0}s@example.co end"),
            "[REDACTED:email] [REDACTED:email] end"
        );
        assert_eq!(
            red.redact_line("a@example.com\u{0}tail"),
            "[REDACTED:email]"
        );
        // A rule's match that stops at an invisible character takes the glued word along.
        assert_eq!(
            red.redact_line("Bearer AKIAIOSF\u{ad}ODNN7EXAMPLE next"),
            "Bearer [REDACTED:bearer] next"
        );
    }

    #[test]
    fn builtins_compile() {
        assert_eq!(Redactor::builtin_kinds().count(), BUILTIN_SOURCES.len());
        assert_eq!(BUILTIN_SET.len(), BUILTIN_SOURCES.len());
        assert!(!BUILTIN_SET.is_match("checkout 5xx rate above 2% for 5m"));
    }

    #[test]
    fn aws_access_key_ids() {
        assert_eq!(
            r("key AKIAIOSFODNN7EXAMPLE used"),
            "key [REDACTED:aws_access_key] used"
        );
        assert_eq!(r("ASIAY34FZKBOKMUTVV7A"), "[REDACTED:aws_access_key]");
    }

    #[test]
    fn aws_secret_after_key() {
        let out = r("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        assert!(!out.contains("wJalrXUtnFEMI"), "{out}");
        assert!(out.contains("[REDACTED:aws_secret]"), "{out}");
        let out = r(r#"{"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG"}"#);
        assert!(!out.contains("wJalrXUtnFEMI"), "{out}");
    }

    #[test]
    fn bearer_tokens_keep_the_scheme() {
        assert_eq!(
            r("Authorization: Bearer abc.DEF-123_x"),
            "Authorization: Bearer [REDACTED:bearer]"
        );
        assert_eq!(r("basic dXNlcjpwYXNzd29yZA=="), "basic [REDACTED:basic]");
    }

    #[test]
    fn jwts() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl";
        assert_eq!(r(&format!("got {jwt} back")), "got [REDACTED:jwt] back");
    }

    #[test]
    fn url_passwords_keep_the_user() {
        assert_eq!(
            r("dial postgres://app:s3cr3t@db.internal:5432/orders"),
            "dial postgres://app:[REDACTED:url_password]@db.internal:5432/orders"
        );
        assert_eq!(
            r("https://user:pass@host/x"),
            "https://user:[REDACTED:url_password]@host/x"
        );
    }

    #[test]
    fn pem_private_keys_even_when_cut() {
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----";
        assert_eq!(r(&format!("k={pem} end")), "k=[REDACTED:pem] end");
        let cut = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0";
        assert_eq!(r(cut), "[REDACTED:pem]");
    }

    #[test]
    fn key_value_secrets() {
        for (input, hidden) in [
            ("password=hunter2 retry", "hunter2"),
            ("db_password: 'hunter2'", "hunter2"),
            (r#""client_secret":"abcdef""#, "abcdef"),
            ("token=xyz&next=1", "xyz"),
            ("X-Api-Key: k123456", "k123456"),
            ("API_KEY=zzz", "zzz"),
            ("secret = qqq", "qqq"),
        ] {
            let out = r(input);
            assert!(!out.contains(hidden), "{input} -> {out}");
            assert!(out.contains("[REDACTED:secret]"), "{input} -> {out}");
        }
        assert_eq!(r("token=xyz&next=1"), "token=[REDACTED:secret]&next=1");
    }

    #[test]
    fn whole_values_and_more_token_shapes() {
        for (input, hidden) in [
            ("password=[Hunter2Secret]", &["Hunter2Secret"][..]),
            (
                "password=[correct horse battery]",
                &["correct", "horse", "battery"],
            ),
            (
                r#"password: "correct horse battery""#,
                &["correct", "horse", "battery"],
            ),
            (
                "password = 'correct horse battery' next",
                &["correct", "horse", "battery"],
            ),
            (
                r#"{\"password\": \"correct horse battery\"}"#,
                &["correct", "horse", "battery"],
            ),
            ("token: [REDACTED:bearer]tail9Secret", &["tail9Secret"]),
            (
                "xoxb-1234567890-abcdefghijKLMN",
                &["abcdefghijKLMN", "1234567890"],
            ),
            ("xoxp-12345-67890-abcdef0123", &["abcdef0123"]),
            (
                "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
                &["aBcDeFgHiJkLmNoPqRsTuVwXyZ"],
            ),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123",
                &["abcdefghijklmnopqrstuvwxyz"],
            ),
            ("Authorization: Token abc123def456", &["abc123def456"]),
            ("authorization=SSWS 00QCjAl4MlV-WPXM", &["00QCjAl4MlV"]),
            ("Authorization: Splunk 9f1a2b3c-4d5e", &["9f1a2b3c"]),
            (
                "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                &["wJalrXUtnFEMI"],
            ),
            (
                "AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                &["wJalrXUtnFEMI"],
            ),
            (
                "AKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                &["wJalrXUtnFEMI"],
            ),
        ] {
            let out = r(input);
            for h in hidden {
                assert!(!out.contains(h), "{input} -> {out}");
            }
            assert!(out.contains("[REDACTED:"), "{input} -> {out}");
            assert_eq!(r(&out), out, "{input}: not a fixed point");
        }
        assert_eq!(
            r("Authorization: Token abc123"),
            "Authorization: Token [REDACTED:authorization]"
        );
        assert_eq!(
            r("Authorization: Bearer abc123"),
            "Authorization: Bearer [REDACTED:bearer]"
        );
        assert_eq!(r("xoxb-1234567890-abcdefghij"), "[REDACTED:slack]");
        // Markers keep their kind: the aws_secret value is not re-redacted as a secret.
        assert_eq!(
            r("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG"),
            "aws_secret_access_key=[REDACTED:aws_secret]"
        );
        assert_eq!(
            r("AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            "[REDACTED:aws_access_key] [REDACTED:aws_secret]"
        );
        // Ordinary words are left alone.
        let s = "authorization failed: token expired for user (xox) ghp";
        assert_eq!(r(s), s);
    }

    #[test]
    fn emails() {
        assert_eq!(
            r("mail jane.doe+ops@example.co.uk now"),
            "mail [REDACTED:email] now"
        );
    }

    #[test]
    fn ordinary_text_is_untouched() {
        let s = "connection refused after 3000 ms on 10.2.3.4:5432 (checkout 5xx above 5%)";
        assert_eq!(r(s), s);
    }

    #[test]
    fn extra_patterns_apply_and_invalid_ones_are_named() {
        let red = Redactor::with_extra(&["cust-[0-9]{6}".to_owned()]).unwrap();
        assert_eq!(
            red.redact("order of cust-123456"),
            "order of [REDACTED:custom]"
        );
        // Built-ins still apply.
        assert_eq!(
            red.redact("AKIAIOSFODNN7EXAMPLE"),
            "[REDACTED:aws_access_key]"
        );
        // A pattern matching the empty string adds nothing.
        let red = Redactor::with_extra(&["x*".to_owned()]).unwrap();
        assert_eq!(red.redact("abxxc"), "ab[REDACTED:custom]c");

        let err = Redactor::with_extra(&["ok".to_owned(), "(unclosed".to_owned()]).unwrap_err();
        assert!(matches!(
            err,
            RedactorError::InvalidPattern { index: 1, .. }
        ));
        assert!(err.to_string().contains("(unclosed"), "{err}");
        let many = vec!["a".to_owned(); EXTRA_PATTERNS_MAX + 1];
        assert!(matches!(
            Redactor::with_extra(&many),
            Err(RedactorError::TooManyPatterns { .. })
        ));
    }

    #[test]
    fn redaction_settles_when_a_replacement_completes_another_rules_match() {
        let red = Redactor::new();
        // The space in the quoted token kept `url_password` from matching;
        // the `secret` rule removes it; the next pass takes the password.
        let once = red.redact("x://u:token='a b'@host");
        assert_eq!(once, "x://u:[REDACTED:url_password]@host");
        assert_eq!(red.redact(&once), once);
        // A text without a secret is returned as it is.
        assert_eq!(red.redact("disk 91% full"), "disk 91% full");
    }

    #[test]
    fn extra_patterns_leave_markers_alone() {
        let red = Redactor::with_extra(&[
            r"(?i)secret\S*".to_owned(),
            r"\[REDACTED:custom\]".to_owned(),
            "REDACTED".to_owned(),
        ])
        .unwrap();
        let once = red.redact("password=abc the secretive REDACTED word");
        assert_eq!(
            once,
            "password=[REDACTED:secret] the [REDACTED:custom] [REDACTED:custom] word"
        );
        assert_eq!(red.redact(&once), once);
        assert!(MARKER.is_match(UNSTABLE));
    }
}

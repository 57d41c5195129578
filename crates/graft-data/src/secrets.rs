//! Secrets in source: found so they never reach training data.
//!
//! The rules follow what gitleaks and detect-secrets look for: provider keys with a known shape
//! (AWS, GitHub, GitLab, Slack, Stripe, Google, OpenAI), private key blocks, JSON Web Tokens,
//! credentials in URLs, passwords and tokens assigned in code, and long high-entropy strings.
//! A finding carries the rule's name and where the secret lies; callers drop the file or
//! [`redact`] it. Nothing here logs or returns a secret's text in a message.
//!
//! Hex strings alone (checksums, commit ids) are not treated as secrets; a hex secret assigned
//! to a name like `api_key` is found by the assignment rule.

use std::sync::OnceLock;

use regex::Regex;

/// One secret found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's name (`aws-access-key`, `private-key`, ...).
    pub rule: &'static str,
    /// 1-based line of the secret's start.
    pub line: usize,
    /// Byte range of the secret in the text.
    pub start: usize,
    pub end: usize,
}

struct Rule {
    name: &'static str,
    pattern: Regex,
    /// The capture group holding the secret (0: the whole match).
    group: usize,
    /// A check on the captured value (entropy, placeholders).
    accept: fn(&str) -> bool,
}

fn any(_: &str) -> bool {
    true
}

/// Shannon entropy of a string, in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

/// A value assigned to a secret-sounding name that looks like a real secret: not a template,
/// a placeholder or an ordinary word.
fn assigned_secret(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    let placeholder = [
        "example",
        "placeholder",
        "changeme",
        "your_",
        "your-",
        "xxxx",
        "****",
        "dummy",
        "redacted",
    ];
    if value.contains(['<', '{', '$', '%']) || placeholder.iter().any(|p| lower.contains(p)) {
        return false;
    }
    // An identifier-like word (`punctuation`, `access_token`) names something; a secret mixes
    // kinds of characters.
    let kinds = [
        value.chars().any(|c| c.is_ascii_lowercase()),
        value.chars().any(|c| c.is_ascii_uppercase()),
        value.chars().any(|c| c.is_ascii_digit()),
        value
            .chars()
            .any(|c| !c.is_ascii_alphanumeric() && c != '_' && c != '-' && c != '.'),
    ];
    kinds.iter().filter(|k| **k).count() >= 2 && entropy(value) >= 3.0
}

/// A long string of base64-ish characters with the entropy of random bytes.
fn high_entropy(value: &str) -> bool {
    let mixed = value.chars().any(|c| c.is_ascii_digit())
        && value.chars().any(|c| c.is_ascii_lowercase())
        && value.chars().any(|c| c.is_ascii_uppercase());
    // An alphabet or a counting run (`ABC...xyz0123456789`, a hash's test vector) is not random.
    let bytes = value.as_bytes();
    let runs = bytes.windows(2).filter(|w| w[1] == w[0].wrapping_add(1)).count();
    mixed && entropy(value) >= 4.5 && runs * 2 < bytes.len()
}

fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let rule = |name, pattern: &str, group, accept| Rule {
            name,
            // The patterns are constants, checked by the tests.
            pattern: Regex::new(pattern).unwrap_or_else(|e| panic!("secret rule {name}: {e}")),
            group,
            accept,
        };
        vec![
            rule(
                "private-key",
                r"-----BEGIN[A-Z ]{0,30} PRIVATE KEY( BLOCK)?-----[\s\S]*?(-----END[A-Z ]{0,30} PRIVATE KEY( BLOCK)?-----|\z)",
                0,
                any,
            ),
            rule("aws-access-key", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b", 0, any),
            rule(
                "aws-secret-key",
                r#"(?i)aws.{0,20}(?:secret|key).{0,20}["'`]([0-9a-zA-Z/+]{40})["'`]"#,
                1,
                any,
            ),
            rule("github-token", r"\b(?:gh[pousr]_[0-9A-Za-z]{36}|github_pat_[0-9A-Za-z_]{82})\b", 0, any),
            rule("gitlab-token", r"\bglpat-[0-9A-Za-z_-]{20}", 0, any),
            rule("slack-token", r"\bxox[abprs]-[0-9A-Za-z-]{10,}", 0, any),
            rule("stripe-key", r"\b(?:sk|rk)_(?:live|test)_[0-9a-zA-Z]{24,}\b", 0, any),
            rule("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}\b", 0, any),
            rule("openai-api-key", r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}", 0, any),
            rule(
                "json-web-token",
                r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
                0,
                any,
            ),
            rule(
                "url-credentials",
                r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@'\x22]{1,64}:([^/\s:@'\x22]{3,128})@",
                1,
                assigned_secret_or_long,
            ),
            rule(
                "assigned-secret",
                r#"(?i)[\w.-]*(?:password|passwd|pwd|secret|token|api_?key|apikey|access_?key|auth_?key|private_?key|credentials?)[\w.-]*["'`]?\s*(?::=|=>|=|:)\s*[bru]?["'`]([^"'`\s]{8,200})["'`]"#,
                1,
                assigned_secret,
            ),
            rule("high-entropy-string", r#"["'`]([A-Za-z0-9+/_=-]{24,400})["'`]"#, 1, high_entropy),
        ]
    })
}

fn assigned_secret_or_long(value: &str) -> bool {
    !value.contains(['<', '{', '$', '%']) && value.len() >= 3 && !value.eq_ignore_ascii_case("password")
}

/// Every secret in `text`, in order; overlapping findings of later rules are left out.
pub fn scan(text: &str) -> Vec<Finding> {
    let mut found: Vec<Finding> = Vec::new();
    for rule in rules() {
        for captures in rule.pattern.captures_iter(text) {
            let Some(m) = captures.get(rule.group) else {
                continue;
            };
            if !(rule.accept)(m.as_str()) {
                continue;
            }
            if found.iter().any(|f| m.start() < f.end && f.start < m.end()) {
                continue;
            }
            found.push(Finding {
                rule: rule.name,
                line: text[..m.start()].matches('\n').count() + 1,
                start: m.start(),
                end: m.end(),
            });
        }
    }
    found.sort_by_key(|f| f.start);
    found
}

/// `text` with each finding replaced by `<secret:RULE>`.
pub fn redact(text: &str, findings: &[Finding]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        if f.start < at {
            continue;
        }
        out.push_str(&text[at..f.start]);
        out.push_str("<secret:");
        out.push_str(f.rule);
        out.push('>');
        at = f.end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One planted secret per rule (fake values with each provider's shape), each in the code
    /// that would hold it. Shared with the dataset tests.
    pub(crate) fn planted() -> Vec<(&'static str, String, String)> {
        let pem_body = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\nVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n";
        vec![
            (
                "private-key",
                format!("-----BEGIN RSA PRIVATE KEY-----\n{pem_body}-----END RSA PRIVATE KEY-----"),
                String::new(),
            ),
            ("aws-access-key", "AKIAIOSFODNN7QWERTYZ".into(), "aws_id = \"".into()),
            (
                "aws-secret-key",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKQ".into(),
                "AWS_SECRET_ACCESS_KEY = \"".into(),
            ),
            (
                "github-token",
                format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5"),
                "GH = \"".into(),
            ),
            ("gitlab-token", "glpat-Xy3k9Qw2Er5Ty7Ui1Op4".into(), "gitlab = \"".into()),
            (
                "slack-token",
                "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp".into(),
                "slack = \"".into(),
            ),
            ("stripe-key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc".into(), "stripe = \"".into()),
            (
                "google-api-key",
                "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY".into(),
                "maps = \"".into(),
            ),
            (
                "openai-api-key",
                "sk-proj-Ab12Cd34Ef56Gh78Ij90T3BlbkFJKl12Mn34Op56Qr78St90".into(),
                "client = OpenAI(api=\"".into(),
            ),
            (
                "json-web-token",
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U".into(),
                "header = \"Bearer ".into(),
            ),
            ("url-credentials", "s3cr3tP4ss".into(), "DATABASE_URL = \"postgres://admin:".into()),
            ("assigned-secret", "hunter2-Zq9!xR".into(), "db_password = \"".into()),
            (
                "high-entropy-string",
                "q8Zr3LxT0vWk5Yb2Nc7Hs1Jf4Gd6Pa9Me".into(),
                "seed = \"".into(),
            ),
        ]
    }

    #[test]
    fn each_kind_of_secret_is_found_by_its_rule() {
        for (rule, secret, before) in planted() {
            let after = if rule == "url-credentials" { "@db.internal/app\"" } else { "\"" };
            let text = format!("fn setup() {{\n    let ok = 1;\n}}\n{before}{secret}{after}\n");
            let found = scan(&text);
            assert!(
                found
                    .iter()
                    .any(|f| f.rule == rule && text[f.start..f.end].contains(&secret[..8.min(secret.len())])),
                "{rule} not found in {text:?}: {found:?}"
            );
            assert!(found.iter().all(|f| f.line >= 4), "{rule}: {found:?}");
            let redacted = redact(&text, &found);
            assert!(!redacted.contains(&secret), "{rule}: {redacted}");
            assert!(redacted.contains("<secret:"), "{rule}: {redacted}");
            assert!(redacted.starts_with("fn setup() {\n"));
        }
    }

    #[test]
    fn ordinary_code_has_no_secrets() {
        let code = r#"
const SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
let token_kind = "punctuation";
let password = std::env::var("DB_PASSWORD")?;
api_key = os.environ["API_KEY"]
secret = "<your-secret-here>"
password: "changeme123"
url = "https://example.com/path?query=1"
let name = "ConfigurationManagerFactory";
md4("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
token = f"{prefix}{suffix}"
"#;
        assert_eq!(scan(code), vec![]);
    }

    #[test]
    fn entropy_is_computed_in_bits_per_character() {
        assert_eq!(entropy(""), 0.0);
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
    }
}

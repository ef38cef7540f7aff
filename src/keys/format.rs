//! What a Gemini API key looks like, and finding keys in pasted text.
//!
//! Google issues keys in two shapes: the classic `AIza…` (39 URL-safe characters) and the
//! newer `PREFIX.` form (`AQ.Ab8RN6L…`, `IQ.…`) whose prefix is followed by a dot. Both are
//! made of URL-safe characters (`A-Z a-z 0-9 - _`); the newer ones add dots inside. A dot at
//! the start or end of a piece of text is punctuation, never part of a key.

/// Characters that separate keys in pasted text: whitespace and list or quoting marks.
fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            ',' | ';' | '"' | '\'' | '`' | '[' | ']' | '(' | ')' | '{' | '}' | '<' | '>'
        )
}

/// Punctuation that ends a sentence or a label and is trimmed off a candidate's ends.
fn is_edge_punctuation(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | ':')
}

/// Splits pasted text into candidate keys: separators split them, sentence punctuation at
/// a candidate's ends is dropped (`…wxyz.` is `…wxyz`), blank pieces are ignored. A dot
/// inside a candidate stays: it is part of an `AQ.…` key.
pub fn extract_keys(text: &str) -> Vec<String> {
    text.split(is_separator)
        .map(|s| s.trim_matches(is_edge_punctuation))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A plausible Gemini key: 20 to 256 URL-safe characters, with dots allowed between them
/// (never first, last or two in a row).
pub fn looks_like_key(s: &str) -> bool {
    (20..=256).contains(&s.len())
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AQ: &str = "AQ.Ab8RN6LkQz3_x-Tq0aVbWcYdZeFgHiJkLmNoPqRsTuwxyz";
    const IQ: &str = "IQ.Cd9ST7MlRa4_y-Ur1bWcXdYeZfGhIjKlMnOpQrStUv";

    #[test]
    fn messy_text_yields_trimmed_candidates() {
        let text = "AIzaSyA_first-key-000000000000000000000,\n\n  AIzaSyB-second-key-11111111111111111111 ;x\r\n\"AIzaSyA_first-key-000000000000000000000\"";
        let keys = extract_keys(text);
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[0], "AIzaSyA_first-key-000000000000000000000");
        assert!(looks_like_key(&keys[1]));
        assert!(!looks_like_key(&keys[2]), "too short");
        assert!(!looks_like_key("AIza<script>alert(1)</script>aaaaaaaaaaaa"));
    }

    #[test]
    fn dotted_keys_are_whole_and_a_closing_dot_is_not_part_of_them() {
        let text = format!("My keys are {AQ}. And also ({IQ}), see: {AQ}.");
        let found: Vec<String> = extract_keys(&text)
            .into_iter()
            .filter(|k| looks_like_key(k))
            .collect();
        assert_eq!(found, vec![AQ, IQ, AQ]);
    }

    #[test]
    fn every_key_form_is_accepted_and_malformed_dots_are_not() {
        assert!(looks_like_key(AQ));
        assert!(looks_like_key(IQ));
        assert!(looks_like_key("XY2.Future-Form_0123456789abcdef"));
        assert!(looks_like_key("AIzaSyA_first-key-000000000000000000000"));
        assert!(!looks_like_key(".AQAb8RN6LkQz3_x-Tq0aVbWcYd"));
        assert!(!looks_like_key("AQ..Ab8RN6LkQz3_x-Tq0aVbWcYd"));
        assert!(!looks_like_key("AQ.Ab8RN6LkQz3_x-Tq0aVbWcYd."));
        assert!(!looks_like_key("AQ.Ab8RN6LkQz3/x+Tq0aVbWcYd"));
    }

    #[test]
    fn the_brief_keeps_the_prefix_and_the_last_four() {
        assert_eq!(crate::secret::fingerprint(AQ), "AQ.A…wxyz");
    }
}

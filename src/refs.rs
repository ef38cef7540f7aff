//! Finds the resources a request body names, without parsing it into a schema: the body
//! stays opaque and is forwarded byte for byte. A scanner walks the bytes for the JSON
//! keys that carry references — `fileUri` / `file_uri` (a `files/…` name or a URL ending
//! in one), `fileName` / `file_name` (a batch's input file), `cachedContent` /
//! `cached_content`, `previous_interaction_id`, `fileSearchStoreNames` — and reads the
//! string (or list of strings) after each. A key inside a string value (escaped quotes)
//! is not a key and is skipped.

/// The resource names `body` refers to, deduplicated, in order of appearance.
pub fn references(body: &[u8]) -> Vec<String> {
    scan(body, ref_kind)
}

/// The files an answer says were made (`uri` of a Veo video, a batch's `responsesFile`).
pub fn produced(answer: &[u8]) -> Vec<String> {
    scan(answer, |key| {
        matches!(key, "uri" | "responsesFile" | "responses_file").then_some(RefKind::File)
    })
}

fn scan(body: &[u8], ref_kind: fn(&str) -> Option<RefKind>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'"', &body[at..]) {
        let start = at + i;
        let Some((key, after)) = read_string(body, start) else {
            break;
        };
        at = after;
        let escaped = start > 0 && body[start - 1] == b'\\';
        let Some(kind) = (!escaped).then(|| ref_kind(&key)).flatten() else {
            continue;
        };
        let Some(colon) = skip_ws(body, after).filter(|&p| body[p] == b':') else {
            continue;
        };
        let Some(v) = skip_ws(body, colon + 1) else {
            break;
        };
        let mut values = Vec::new();
        at = read_values(body, v, &mut values);
        for value in values {
            if let Some(name) = normalise(kind, &value) {
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// The first string value of `field` in `bytes` (a create answer's `name` or `id`).
pub fn first_field(bytes: &[u8], field: &str) -> Option<String> {
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'"', &bytes[at..]) {
        let start = at + i;
        let (key, after) = read_string(bytes, start)?;
        at = after;
        if key != field {
            continue;
        }
        let Some(colon) = skip_ws(bytes, after).filter(|&p| bytes[p] == b':') else {
            continue;
        };
        let v = skip_ws(bytes, colon + 1)?;
        if bytes[v] == b'"' {
            return read_string(bytes, v).map(|(s, _)| s);
        }
    }
    None
}

#[derive(Clone, Copy)]
enum RefKind {
    File,
    Cache,
    Interaction,
    Store,
}

fn ref_kind(key: &str) -> Option<RefKind> {
    Some(match key {
        "fileUri" | "file_uri" | "fileName" | "file_name" => RefKind::File,
        "cachedContent" | "cached_content" => RefKind::Cache,
        "previous_interaction_id" | "previousInteractionId" => RefKind::Interaction,
        "fileSearchStoreNames" | "file_search_store_names" => RefKind::Store,
        _ => return None,
    })
}

fn normalise(kind: RefKind, value: &str) -> Option<String> {
    let value = value.trim();
    match kind {
        RefKind::File => {
            // `files/abc`, or a URL whose path is `/{version}/files/abc[:download][?…]`.
            let name = if value.starts_with("files/") {
                value
            } else {
                let i = value.find("/files/")?;
                let before = &value[..i];
                let version = before.rsplit('/').next()?;
                if !matches!(version, "v1beta" | "v1" | "v1alpha") {
                    return None;
                }
                &value[i + 1..]
            };
            let id = name["files/".len()..]
                .split([':', '?', '/', '#'])
                .next()
                .unwrap_or("");
            (!id.is_empty()).then(|| format!("files/{id}"))
        }
        RefKind::Cache => value
            .starts_with("cachedContents/")
            .then(|| value.to_owned()),
        RefKind::Interaction => {
            let id = value.strip_prefix("interactions/").unwrap_or(value);
            (!id.is_empty() && !id.contains('/')).then(|| format!("interactions/{id}"))
        }
        RefKind::Store => {
            crate::native::owner_of_name(value).filter(|n| n.starts_with("fileSearchStores/"))
        }
    }
}

fn skip_ws(b: &[u8], mut at: usize) -> Option<usize> {
    while at < b.len() && b[at].is_ascii_whitespace() {
        at += 1;
    }
    (at < b.len()).then_some(at)
}

/// The string starting with the quote at `at`, unescaped, and the index after it.
fn read_string(b: &[u8], at: usize) -> Option<(String, usize)> {
    let mut out = Vec::new();
    let mut i = at + 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), i + 1)),
            b'\\' => {
                i += 1;
                if let Some(&c) = b.get(i) {
                    out.push(c);
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    None
}

/// A string, or the strings of a list, starting at `at`; answers where scanning goes on.
fn read_values(b: &[u8], at: usize, out: &mut Vec<String>) -> usize {
    match b[at] {
        b'"' => match read_string(b, at) {
            Some((s, next)) => {
                out.push(s);
                next
            }
            None => b.len(),
        },
        b'[' => {
            let mut i = at + 1;
            while let Some(p) = skip_ws(b, i) {
                match b[p] {
                    b'"' => match read_string(b, p) {
                        Some((s, next)) => {
                            out.push(s);
                            i = next;
                        }
                        None => return b.len(),
                    },
                    b',' => i = p + 1,
                    _ => return p,
                }
            }
            b.len()
        }
        _ => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_cache_interaction_and_store_references() {
        let body = br#"{"contents":[{"parts":[
            {"fileData":{"mimeType":"application/pdf","fileUri":"https://generativelanguage.googleapis.com/v1beta/files/abc-1"}},
            {"file_data":{"file_uri" : "files/def"}},
            {"fileData":{"fileUri":"https://www.youtube.com/watch?v=x"}},
            {"fileData":{"fileUri":"files/abc-1"}},
            {"text":"say \"fileUri\": \"files/nope\" please"}]}],
          "cachedContent":"cachedContents/c9",
          "previous_interaction_id":"v1_prev",
          "tools":[{"fileSearch":{"fileSearchStoreNames":["fileSearchStores/s1", "fileSearchStores/s2"]}}],
          "src":{"fileName":"files/batch-in"}}"#;
        assert_eq!(
            references(body),
            [
                "files/abc-1",
                "files/def",
                "cachedContents/c9",
                "interactions/v1_prev",
                "fileSearchStores/s1",
                "fileSearchStores/s2",
                "files/batch-in",
            ]
        );
    }

    #[test]
    fn no_references_in_plain_or_broken_bodies() {
        assert!(references(br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#).is_empty());
        assert!(references(b"").is_empty());
        assert!(references(br#"{"fileUri":"#).is_empty());
        assert!(references(br#"{"fileUri":"files/"}"#).is_empty());
        assert!(references(br#"{"fileUri": 12, "x": "files/a"}"#).is_empty());
        assert!(references(br#"{"cachedContent":"somethingElse/x"}"#).is_empty());
    }

    #[test]
    fn files_an_answer_made() {
        let done = br#"{"done":true,"response":{"generateVideoResponse":{"generatedSamples":[{"video":{"uri":"https://generativelanguage.googleapis.com/v1beta/files/vid1:download?alt=media"}}]}}}"#;
        assert_eq!(produced(done), ["files/vid1"]);
        let batch = br#"{"metadata":{"output":{"responsesFile":"files/batch-out"}}}"#;
        assert_eq!(produced(batch), ["files/batch-out"]);
        assert!(produced(br#"{"uri":"https://example.com/x"}"#).is_empty());
    }

    #[test]
    fn a_create_answer_names_its_resource() {
        let answer = br#"{"file": {"name": "files/x1", "displayName": "a"}}"#;
        assert_eq!(first_field(answer, "name").as_deref(), Some("files/x1"));
        assert_eq!(
            first_field(br#"{"id" : "v1_abc","status":"completed"}"#, "id").as_deref(),
            Some("v1_abc")
        );
        assert_eq!(first_field(br#"{"name": 3}"#, "name"), None);
    }
}

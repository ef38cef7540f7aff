//! Key groups and admin-set limits in the file: `[[groups]]` (name, order, models,
//! limits for each of its keys) and the `limits` of an `[[upstream_keys]]` entry, with
//! their checks. The pool decides what they do (see `keys::groups`, `keys::limits`).

use anyhow::bail;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Limits the admin sets for a (key, model), in the config and the admin API: requests
/// per minute, requests per (Pacific) day, input tokens per minute.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SetLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpd: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u32>,
}

/// The group a key without one belongs to.
pub const DEFAULT_GROUP: &str = "default";

/// `[[groups]]`: a request is served by the first group (lowest `order`) that serves its
/// model and has a usable key; the next group only when every key of this one is out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    #[serde(default)]
    pub order: i32,
    /// Models the group serves, as globs; empty: every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Limits for each key of the group, by model name or glob.
    #[serde(default)]
    pub limits: BTreeMap<String, SetLimits>,
}

/// A group name: 1 to 40 letters, digits, `-`, `_` or `.`.
pub fn valid_group(name: &str) -> bool {
    (1..=40).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A model name or glob: 1 to 100 of letters, digits, `-`, `_`, `.`, `/`, `*`, `?`.
pub fn valid_model_pattern(p: &str) -> bool {
    (1..=100).contains(&p.len())
        && p.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'*' | b'?')
        })
}

/// The most models one key or group may set limits for.
pub const MAX_LIMITS: usize = 64;

/// Checks a map of set limits; the message names what is wrong, not a value.
pub fn check_limits(limits: &BTreeMap<String, SetLimits>) -> Result<(), String> {
    if limits.len() > MAX_LIMITS {
        return Err(format!("at most {MAX_LIMITS} models may have limits"));
    }
    for (model, l) in limits {
        if !valid_model_pattern(model) {
            return Err(
                "a model is 1 to 100 letters, digits, '-', '_', '.', '/', '*' or '?'".to_owned(),
            );
        }
        if [l.rpm, l.rpd, l.tpm].contains(&Some(0)) {
            return Err(format!("the limits of {model:?} must be at least 1"));
        }
        if l.rpm.is_none() && l.rpd.is_none() && l.tpm.is_none() {
            return Err(format!("{model:?} sets none of rpm, rpd, tpm"));
        }
    }
    Ok(())
}

/// Checks `[[groups]]` and the groups the keys name.
pub fn check_groups<'a>(
    groups: &[GroupConfig],
    key_groups: impl Iterator<Item = &'a str>,
    user_groups: impl Iterator<Item = &'a str>,
) -> anyhow::Result<()> {
    let mut names = std::collections::HashSet::new();
    for g in groups {
        if !valid_group(&g.name) {
            bail!("[[groups]] name must be 1 to 40 letters, digits, '-', '_' or '.'");
        }
        if !names.insert(g.name.as_str()) {
            bail!("[[groups]] name {:?} appears twice", g.name);
        }
        if let Some(p) = g.models.iter().find(|p| !valid_model_pattern(p)) {
            bail!(
                "[[groups]] {:?}: model pattern {p:?} is not a model name or glob",
                g.name
            );
        }
        if let Err(e) = check_limits(&g.limits) {
            bail!("[[groups]] {:?} limits: {e}", g.name);
        }
    }
    for k in key_groups {
        if k != DEFAULT_GROUP && !names.contains(k) {
            bail!("[[upstream_keys]] names group {k:?}, which no [[groups]] entry declares");
        }
    }
    for u in user_groups {
        if u != DEFAULT_GROUP && !names.contains(u) {
            bail!("[[users]] names group {u:?}, which no [[groups]] entry declares");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    fn group(toml: &str) -> anyhow::Result<()> {
        let c = crate::config::Config::parse(toml)?;
        c.validate()
    }

    #[test]
    fn groups_and_key_limits_parse_and_are_checked() {
        group(
            "[[groups]]\nname = \"free\"\norder = 0\nmodels = [\"gemini-2.5-*\"]\n\
             limits = { \"*\" = { rpm = 10, rpd = 250 } }\n\
             [[groups]]\nname = \"paid\"\norder = 1\n\
             [[upstream_keys]]\nkey = \"AIzaExample0000000000000000000000000000\"\ngroup = \"free\"\n\
             limits = { \"gemini-2.5-pro\" = { rpm = 2, tpm = 250000 } }\n",
        )
        .unwrap();
        for (bad, says) in [
            (
                "[[upstream_keys]]\nkey = \"AIzaX\"\ngroup = \"nope\"\n",
                "nope",
            ),
            ("[[groups]]\nname = \"a b\"\n", "name"),
            (
                "[[users]]\nname = \"u\"\ngroups = [\"paid\"]\n",
                "[[users]]",
            ),
            (
                "[[groups]]\nname = \"a\"\n[[groups]]\nname = \"a\"\n",
                "twice",
            ),
            (
                "[[upstream_keys]]\nkey = \"AIzaX\"\nlimits = { m = { rpm = 0 } }\n",
                "at least 1",
            ),
            (
                "[[upstream_keys]]\nkey = \"AIzaX\"\nlimits = { m = { } }\n",
                "none of",
            ),
        ] {
            let err = group(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = group("[[upstream_keys]]\nkey = \"AIzaX\"\nlimits = { m = { rpx = 1 } }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rpx"), "{err}");
    }
}

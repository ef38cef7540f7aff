//! An egress proxy's URL (`http://` CONNECT, `socks5://`, `socks5h://`), checked once when
//! it is read (config file or admin API), split into what the connector needs, and shown
//! only masked: `Debug`, `Display` and [`ProxyUrl::masked`] print the userinfo as
//! `user:***@host:port`, never the password.

use crate::secret::Secret;
use percent_encoding::percent_decode_str;
use std::fmt;

/// How the proxy is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// HTTP CONNECT.
    Http,
    /// SOCKS5, host names resolved here.
    Socks5,
    /// SOCKS5, host names resolved by the proxy.
    Socks5h,
}

/// A checked proxy URL.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ProxyUrl {
    /// The URL as given (the store writes it back whole).
    full: Secret,
    kind: ProxyKind,
    /// `http://host:port/`: where the TCP connection goes, without userinfo.
    endpoint: http::Uri,
    /// Decoded user name and password, when the URL has userinfo.
    credentials: Option<(String, Secret)>,
    masked: String,
}

/// Why a proxy URL was refused; the message never quotes the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyUrlError {
    #[error("a proxy URL must start with http://, socks5:// or socks5h://")]
    Scheme,
    #[error("a proxy URL is scheme://[user:password@]host[:port], with no path or query")]
    Shape,
    #[error("a proxy URL's user name or password is not valid percent-encoded UTF-8")]
    Userinfo,
}

impl ProxyUrl {
    pub fn parse(text: &str) -> Result<Self, ProxyUrlError> {
        let text = text.trim();
        let (scheme, rest) = text.split_once("://").ok_or(ProxyUrlError::Scheme)?;
        let (kind, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" => (ProxyKind::Http, 80),
            "socks5" => (ProxyKind::Socks5, 1080),
            "socks5h" => (ProxyKind::Socks5h, 1080),
            _ => return Err(ProxyUrlError::Scheme),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(ProxyUrlError::Shape);
        }
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let parsed: http::uri::Authority = host.parse().map_err(|_| ProxyUrlError::Shape)?;
        if parsed.host().is_empty() || host.contains('@') {
            return Err(ProxyUrlError::Shape);
        }
        let port = match host[parsed.host().len()..].strip_prefix(':') {
            Some(p) => p.parse::<u16>().map_err(|_| ProxyUrlError::Shape)?,
            None => default_port,
        };
        let hostport = format!("{}:{port}", parsed.host());
        let endpoint = format!("http://{hostport}/")
            .parse()
            .map_err(|_| ProxyUrlError::Shape)?;
        let credentials = userinfo.map(split_userinfo).transpose()?;
        let masked = match userinfo {
            Some(u) => {
                let user = u.split_once(':').map_or(u, |(user, _)| user);
                format!("{scheme}://{user}:***@{hostport}")
            }
            None => format!("{scheme}://{hostport}"),
        };
        Ok(Self {
            full: Secret::new(text),
            kind,
            endpoint,
            credentials,
            masked,
        })
    }

    /// The URL with its password hidden: what logs, errors and the admin API show.
    pub fn masked(&self) -> &str {
        &self.masked
    }

    /// The URL whole, password included: for the store only.
    pub fn expose(&self) -> &str {
        self.full.expose()
    }

    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    pub fn endpoint(&self) -> &http::Uri {
        &self.endpoint
    }

    /// The decoded user name and password.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(user, pass)| (user.as_str(), pass.expose()))
    }
}

fn split_userinfo(userinfo: &str) -> Result<(String, Secret), ProxyUrlError> {
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| ProxyUrlError::Userinfo)
    };
    Ok((decode(user)?, Secret::new(decode(pass)?)))
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked)
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked)
    }
}

impl<'de> serde::Deserialize<'de> for ProxyUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        ProxyUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde for the one place a proxy URL is written out whole, password included: the
/// store. Use as `#[serde(default, with = "crate::config::stored_proxy")]`.
pub mod stored {
    use super::ProxyUrl;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Option<ProxyUrl>, ser: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => ser.serialize_some(p.expose()),
            None => ser.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ProxyUrl>, D::Error> {
        Option::<ProxyUrl>::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked_and_decoded() {
        let p = ProxyUrl::parse("socks5h://alice:pa%40ss%3Aword@proxy.example:1081").unwrap();
        assert_eq!(p.masked(), "socks5h://alice:***@proxy.example:1081");
        assert_eq!(format!("{p} {p:?}").matches("pa").count(), 0);
        assert_eq!(p.credentials(), Some(("alice", "pa@ss:word")));
        assert_eq!(p.kind(), ProxyKind::Socks5h);
        assert_eq!(p.endpoint().to_string(), "http://proxy.example:1081/");
        assert_eq!(
            p.expose(),
            "socks5h://alice:pa%40ss%3Aword@proxy.example:1081"
        );
    }

    #[test]
    fn ports_default_by_scheme_and_plain_urls_show_as_they_are() {
        let p = ProxyUrl::parse("http://10.0.0.1/").unwrap();
        assert_eq!(p.masked(), "http://10.0.0.1:80");
        assert_eq!(p.credentials(), None);
        let p = ProxyUrl::parse("socks5://[::1]").unwrap();
        assert_eq!(p.endpoint().to_string(), "http://[::1]:1080/");
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_them() {
        for (url, want) in [
            ("https://u:hunter2@h:1", ProxyUrlError::Scheme),
            ("u:hunter2@h:1", ProxyUrlError::Scheme),
            ("http://u:hunter2@h:1/path", ProxyUrlError::Shape),
            ("http://u:hunter2@", ProxyUrlError::Shape),
            ("http://u:hunter2@h:notaport", ProxyUrlError::Shape),
            ("http://u:%ff@h:1", ProxyUrlError::Userinfo),
        ] {
            let err = ProxyUrl::parse(url).unwrap_err();
            assert_eq!(err, want, "{url}");
            assert!(!err.to_string().contains("hunter2"));
        }
    }
}

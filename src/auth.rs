//! Admin sessions: the password (argon2 hash), the JWT signing key (random, persisted),
//! the login throttle (`login_gate`), and checking a request's session (Bearer or cookie)
//! with the CSRF rule for cookie-authenticated writes.
//!
//! There are no default secrets: with no password configured, the first start generates
//! one, prints it once, and stores only its hash. Logout revokes that session's token
//! (by its id) until it would have expired anyway.

use crate::config::AdminConfig;
use crate::login_gate::{Attempt, LoginGate, Refusal};
use crate::secret::Secret;
use crate::store::{Store, Write};
use anyhow::Context;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use http::{HeaderMap, Method, header};
use jwt_simple::prelude::*;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use tokio::sync::watch;

const META_PASSWORD: &str = "admin_password_hash";
const META_JWT_KEY: &str = "jwt_key";
const META_REVOKED: &str = "revoked_sessions";
pub const COOKIE: &str = "gb_session";

pub struct AdminAuth {
    password_hash: Secret,
    key: HS256Key,
    ttl: std::time::Duration,
    /// Token ids revoked by logout, with their expiry (Unix seconds).
    revoked: Mutex<HashMap<String, u64>>,
    gate: LoginGate,
    /// Bumped on every revocation, so open feeds can look whether theirs was revoked.
    revocations: watch::Sender<u64>,
}

/// An authorized request's session: its token id and expiry (Unix seconds).
pub struct Session {
    pub id: String,
    pub expires_at: u64,
}

/// Hashes a password as an argon2id PHC string.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

impl AdminAuth {
    pub async fn init(cfg: &AdminConfig, store: &Store) -> anyhow::Result<Self> {
        let password_hash = match (&cfg.password, &cfg.password_hash) {
            (Some(plain), _) => Secret::new(hash_password(plain.expose())?),
            (None, Some(hash)) => {
                PasswordHash::new(hash.expose()).map_err(|_| {
                    anyhow::anyhow!("admin.password_hash is not an argon2/PHC hash")
                })?;
                hash.clone()
            }
            (None, None) => match store.get_meta(META_PASSWORD).await? {
                Some(bytes) => {
                    Secret::new(String::from_utf8(bytes).context("stored password hash")?)
                }
                None => {
                    let password = crate::users::generate_key();
                    let password = Secret::new(&password.expose()[3..]);
                    let hash = hash_password(password.expose())?;
                    store
                        .apply(vec![Write::PutMeta(
                            META_PASSWORD.into(),
                            hash.clone().into_bytes(),
                        )])
                        .await?;
                    print_password_banner(&password);
                    Secret::new(hash)
                }
            },
        };
        let key = match store.get_meta(META_JWT_KEY).await? {
            Some(bytes) if bytes.len() >= 32 => HS256Key::from_bytes(&bytes),
            _ => {
                let key = HS256Key::generate();
                store
                    .apply(vec![Write::PutMeta(META_JWT_KEY.into(), key.to_bytes())])
                    .await?;
                key
            }
        };
        let revoked: HashMap<String, u64> = store
            .get_meta(META_REVOKED)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Self {
            password_hash,
            key,
            ttl: cfg.session_ttl,
            revoked: Mutex::new(revoked),
            gate: LoginGate::new(cfg.login_attempts, cfg.login_window),
            revocations: watch::channel(0).0,
        })
    }

    pub fn ttl(&self) -> std::time::Duration {
        self.ttl
    }

    /// Counts a login attempt from `addr` (see `login_gate`) before its password is checked.
    pub fn begin_login(&self, addr: IpAddr, now_ms: i64) -> Result<Attempt, Refusal> {
        self.gate.begin(addr, now_ms)
    }

    /// Checks a password; argon2 is slow on purpose, so this runs off the async threads.
    /// The attempt's slots are held until the check ends, even if the caller goes away.
    pub async fn verify_password(&self, password: String, attempt: Attempt) -> Option<Attempt> {
        let hash = self.password_hash.clone();
        tokio::task::spawn_blocking(move || {
            let ok = PasswordHash::new(hash.expose()).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            });
            ok.then_some(attempt)
        })
        .await
        .ok()
        .flatten()
    }

    pub fn issue(&self) -> String {
        let id = format!("{:032x}", rand::random::<u128>());
        let claims = Claims::create(Duration::from_secs(self.ttl.as_secs().max(1)))
            .with_subject("admin")
            .with_jwt_id(id);
        self.key
            .authenticate(claims)
            .expect("HS256 signing cannot fail")
    }

    fn claims(&self, token: &str) -> Option<JWTClaims<NoCustomClaims>> {
        let options = VerificationOptions {
            required_subject: Some("admin".into()),
            time_tolerance: Some(Duration::from_secs(0)),
            ..Default::default()
        };
        self.key
            .verify_token::<NoCustomClaims>(token, Some(options))
            .ok()
    }

    pub fn token_ok(&self, token: &str) -> bool {
        self.session_of(token).is_some()
    }

    /// The live session `token` stands for: signed by us, unexpired, not revoked.
    fn session_of(&self, token: &str) -> Option<Session> {
        let claims = self.claims(token)?;
        let (id, exp) = (claims.jwt_id?, claims.expires_at?);
        (!self.is_revoked(&id)).then(|| Session {
            id,
            expires_at: exp.as_secs(),
        })
    }

    /// The live session a request carries (Bearer or cookie), if any.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        self.session_of(bearer(headers).or_else(|| cookie(headers, COOKIE))?)
    }

    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Changes whenever a session is revoked.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Revokes one session token (logout); persisted so a restart keeps it revoked.
    pub async fn revoke(&self, store: &Store, token: &str) -> Result<(), crate::store::StoreError> {
        let Some(claims) = self.claims(token) else {
            return Ok(());
        };
        let (Some(id), Some(exp)) = (claims.jwt_id, claims.expires_at) else {
            return Ok(());
        };
        let now = crate::keys::unix_ms() as u64 / 1000;
        let snapshot = {
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            revoked.retain(|_, e| *e > now);
            revoked.insert(id, exp.as_secs());
            serde_json::to_vec(&*revoked).expect("a map of strings serialises")
        };
        self.revocations.send_modify(|n| *n += 1);
        store
            .apply(vec![Write::PutMeta(META_REVOKED.into(), snapshot)])
            .await
    }

    /// Whether a request carries a valid admin session and, if it came by cookie and
    /// changes state, also proves it is not a cross-site form (JSON body or custom header).
    pub fn authorize(&self, method: &Method, headers: &HeaderMap) -> Result<(), Denied> {
        if let Some(token) = bearer(headers) {
            return if self.token_ok(token) {
                Ok(())
            } else {
                Err(Denied::Unauthenticated)
            };
        }
        let Some(token) = cookie(headers, COOKIE) else {
            return Err(Denied::Unauthenticated);
        };
        if !self.token_ok(token) {
            return Err(Denied::Unauthenticated);
        }
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if safe || headers.contains_key("x-requested-with") || is_json(headers) {
            Ok(())
        } else {
            Err(Denied::Csrf)
        }
    }
}

/// Whether a `/metrics` scrape may be answered: with `server.metrics_token` set, it needs
/// `Authorization: Bearer <token>` (compared in constant time) on every listener; without
/// one, metrics are served only on `admin_listen`. The refusal is a status and a message.
pub fn metrics_access(
    token: Option<&Secret>,
    admin_listener: bool,
    headers: &HeaderMap,
) -> Result<(), (http::StatusCode, &'static str)> {
    match token {
        Some(token) if bearer(headers).is_some_and(|t| same_secret(t, token.expose())) => Ok(()),
        Some(_) => Err((
            http::StatusCode::UNAUTHORIZED,
            "metrics need the configured bearer token\n",
        )),
        None if admin_listener => Ok(()),
        None => Err((
            http::StatusCode::FORBIDDEN,
            "metrics on the public listener need server.metrics_token (or serve them on admin_listen)\n",
        )),
    }
}

/// Compares a presented secret with the real one in time independent of where they differ.
fn same_secret(presented: &str, real: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.len() == real.len() && bool::from(presented.as_bytes().ct_eq(real.as_bytes()))
}

#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    Unauthenticated,
    Csrf,
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

/// The token of an `Authorization: Bearer …` header, if the request carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn print_password_banner(password: &Secret) {
    eprintln!(
        "\n==================== gemini-balance ====================\n\
         No admin password was configured; one was generated.\n\
         Admin password (shown once, store it now):\n\n    {}\n\n\
         Set admin.password_hash (see `gemini-balance hash-password`) to choose your own.\n\
         ========================================================\n",
        password.expose()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn auth() -> (AdminAuth, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_redb(dir.path()).await.unwrap();
        let cfg = AdminConfig {
            password: Some(Secret::new("correct horse")),
            ..AdminConfig::default()
        };
        (AdminAuth::init(&cfg, &store).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn password_and_tokens() {
        let (a, _d) = auth().await;
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let attempt = a.begin_login(ip, 0).unwrap();
        let attempt = a.verify_password("correct horse".into(), attempt).await;
        attempt.expect("the right password").succeeded();
        let attempt = a.begin_login(ip, 0).unwrap();
        assert!(a.verify_password("wrong".into(), attempt).await.is_none());
        let t = a.issue();
        assert!(a.token_ok(&t));
        let other = HS256Key::generate()
            .authenticate(Claims::create(Duration::from_hours(1)).with_subject("admin"))
            .unwrap();
        assert!(!a.token_ok(&other), "signed by another key");
        assert!(!a.token_ok("garbage"));
    }

    #[tokio::test]
    async fn logout_revokes_only_that_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_redb(dir.path()).await.unwrap();
        let cfg = AdminConfig {
            password: Some(Secret::new("pw")),
            ..AdminConfig::default()
        };
        let a = AdminAuth::init(&cfg, &store).await.unwrap();
        let (t1, t2) = (a.issue(), a.issue());
        a.revoke(&store, &t1).await.unwrap();
        assert!(!a.token_ok(&t1));
        assert!(a.token_ok(&t2));
        let again = AdminAuth::init(&cfg, &store).await.unwrap();
        assert!(!again.token_ok(&t1), "revocation survives a restart");
        assert!(again.token_ok(&t2), "the signing key is persisted");
    }

    #[test]
    fn metrics_need_the_token_or_the_admin_listener() {
        let token = Secret::new("t0ken");
        let mut h = HeaderMap::new();
        assert!(metrics_access(None, true, &h).is_ok());
        assert_eq!(metrics_access(None, false, &h).unwrap_err().0, 403);
        assert_eq!(metrics_access(Some(&token), true, &h).unwrap_err().0, 401);
        h.insert(header::AUTHORIZATION, "Bearer t0ke".parse().unwrap());
        assert!(metrics_access(Some(&token), false, &h).is_err(), "a prefix");
        h.insert(header::AUTHORIZATION, "Bearer t0ken".parse().unwrap());
        assert!(metrics_access(Some(&token), false, &h).is_ok());
    }

    #[tokio::test]
    async fn cookie_writes_need_json_or_custom_header() {
        let (a, _d) = auth().await;
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("x=1; {COOKIE}={}", a.issue()).parse().unwrap(),
        );
        assert_eq!(a.authorize(&Method::GET, &h), Ok(()));
        assert_eq!(a.authorize(&Method::POST, &h), Err(Denied::Csrf));
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert_eq!(a.authorize(&Method::POST, &h), Ok(()));
        assert_eq!(
            a.authorize(&Method::GET, &HeaderMap::new()),
            Err(Denied::Unauthenticated)
        );
    }
}

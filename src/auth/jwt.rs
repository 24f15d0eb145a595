//! Access tokens: JWT HS256 with the algorithm pinned and `exp` checked without leeway.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::db::UserId;
use crate::error::{AppError, AppResult};

/// The claims of an access token (PROTOCOL §2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id, as a string (RFC 7519: `sub` is a StringOrURI).
    pub sub: String,
    pub role: String,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    /// The user's token generation when issued (an addition to PROTOCOL §2's claims);
    /// tokens from before this claim existed count as generation 0.
    #[serde(default)]
    pub gen: i64,
}

impl Claims {
    pub fn user_id(&self) -> Option<UserId> {
        self.sub.parse().ok().map(UserId)
    }
}

/// Signing and verification keys for one secret.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub", "iat", "jti"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Issues an access token; returns it with its claims.
    pub fn issue(
        &self,
        user: UserId,
        role: &str,
        gen: i64,
        ttl_secs: i64,
    ) -> AppResult<(String, Claims)> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.0.to_string(),
            role: role.to_string(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat: now,
            exp: now + ttl_secs,
            gen,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AppError::internal(format!("jwt encode: {e}")))?;
        Ok((token, claims))
    }

    /// Verifies signature, algorithm and expiry. Revocation is checked by the caller.
    pub fn verify(&self, token: &str) -> AppResult<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|_| AppError::unauthorized())
    }
}

/// Loads `SPOTTER_JWT_SECRET`, or the secret kept in the data dir, or makes and keeps one.
pub fn load_or_create_secret(
    configured: Option<&str>,
    data_dir: &std::path::Path,
) -> std::io::Result<Vec<u8>> {
    if let Some(s) = configured {
        return Ok(s.as_bytes().to_vec());
    }
    let path = data_dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(s.trim().as_bytes().to_vec()),
        Ok(_) => log::warn!("{} is too short; generating a new secret", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    use rand::RngCore;
    let mut raw = [0u8; 48];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let secret = hex::encode(raw);
    crate::db::private_fs::create_dir(data_dir, true)?;
    write_private(&path, secret.as_bytes())?;
    log::warn!(
        "SPOTTER_JWT_SECRET is not set: generated a secret and kept it in {} (set the variable when running several instances)",
        path.display()
    );
    Ok(secret.into_bytes())
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = crate::db::private_fs::options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    // A file that existed (too short) keeps its old mode when opened: set it.
    crate::db::private_fs::restrict(&file)?;
    file.write_all(bytes)?;
    file.sync_all()
}

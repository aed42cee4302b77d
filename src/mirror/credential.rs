//! The app's credential at Microsoft's token endpoint: a client secret, or a certificate whose
//! private key signs a client assertion (a JWT, RFC 7523) for every token request.
//!
//! Microsoft Entra ID's certificate credentials: header `alg` RS256 with `x5t`, the base64url
//! SHA-1 thumbprint of the certificate as registered on the app; claims `aud` (the token
//! endpoint), `iss` = `sub` = the client id, `jti` (unique), `nbf`, `iat` and `exp` (this module
//! signs for 10 minutes). Only RSA keys are accepted there, so only RSA keys are accepted here.

use std::path::Path;

use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::Credential;

/// `client_assertion_type` for a signed JWT (RFC 7523).
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a signed assertion is valid.
const ASSERTION_LIFE_SECS: u64 = 600;

/// The loaded credential. Neither form prints its secret material.
pub enum AppCredential {
    /// `client_secret`.
    Secret(String),
    /// A certificate and its RSA key.
    Certificate(Box<Certificate>),
}

impl std::fmt::Debug for AppCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppCredential::Secret(_) => f.write_str("client secret"),
            AppCredential::Certificate(c) => write!(f, "certificate {}", c.thumbprint_hex()),
        }
    }
}

/// A certificate credential.
pub struct Certificate {
    /// base64url(SHA-1(DER)), the `x5t` header.
    x5t: String,
    sha1: Vec<u8>,
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl Certificate {
    /// The thumbprint as Entra ID's app registration shows it (upper-case hex).
    pub fn thumbprint_hex(&self) -> String {
        self.sha1.iter().map(|b| format!("{b:02X}")).collect()
    }
}

impl AppCredential {
    /// Reads the configured credential; errors name the setting and never the secret.
    pub fn load(c: &Credential) -> Result<AppCredential, String> {
        match c {
            Credential::Secret(src) => Ok(AppCredential::Secret(
                src.read("mirror.client_secret", "CRMGATE_MIRROR_CLIENT_SECRET")?,
            )),
            Credential::Certificate { cert, key } => {
                let pem = key.read("mirror.client_key", "CRMGATE_MIRROR_CLIENT_KEY")?;
                Ok(AppCredential::Certificate(Box::new(Certificate::load(
                    cert,
                    pem.as_bytes(),
                )?)))
            }
        }
    }

    /// The form fields that prove the app's identity in a token request.
    pub fn form_fields(
        &self,
        client_id: &str,
        token_url: &str,
        now_unix: u64,
    ) -> Result<Vec<(&'static str, String)>, String> {
        match self {
            AppCredential::Secret(s) => Ok(vec![("client_secret", s.clone())]),
            AppCredential::Certificate(c) => Ok(vec![
                ("client_assertion_type", ASSERTION_TYPE.to_owned()),
                (
                    "client_assertion",
                    c.assertion(client_id, token_url, now_unix)?,
                ),
            ]),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Certificate {
    /// The certificate (first PEM certificate in `cert`) and its private key (PKCS#8 or PKCS#1
    /// PEM); refuses non-RSA keys and a key that does not belong to the certificate.
    pub fn load(cert: &Path, key_pem: &[u8]) -> Result<Certificate, String> {
        let what = format!("mirror.client_certificate: {}", cert.display());
        let der = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("{what}: cannot read: {e}"))?
            .next()
            .ok_or_else(|| format!("{what}: no PEM certificate in the file"))?
            .map_err(|e| format!("{what}: not a PEM certificate: {e}"))?;
        let key = match PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| format!("mirror.client_key: not a PEM private key: {e}"))?
        {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            _ => {
                return Err(
                    "mirror.client_key: Microsoft Entra ID accepts RSA certificates \
                            only; this is another kind of key"
                        .into(),
                )
            }
        }
        .map_err(|e| format!("mirror.client_key: not a usable RSA key ({e})"))?;
        // The certificate's SubjectPublicKeyInfo holds the key's RSAPublicKey DER verbatim.
        let public = key.public_key().as_ref();
        if !der.windows(public.len()).any(|w| w == public) {
            return Err(format!(
                "mirror.client_key does not belong to the certificate in {}",
                cert.display()
            ));
        }
        let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der.as_ref())
            .as_ref()
            .to_vec();
        Ok(Certificate {
            x5t: b64(&sha1),
            sha1,
            key,
            rng: SystemRandom::new(),
        })
    }

    /// A fresh signed assertion for one token request.
    pub fn assertion(
        &self,
        client_id: &str,
        token_url: &str,
        now_unix: u64,
    ) -> Result<String, String> {
        let mut jti = [0u8; 16];
        self.rng
            .fill(&mut jti)
            .map_err(|_| "mirror: no randomness for the client assertion".to_owned())?;
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t});
        let claims = serde_json::json!({
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "nbf": now_unix,
            "iat": now_unix,
            "exp": now_unix + ASSERTION_LIFE_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "mirror: signing the client assertion failed".to_owned())?;
        Ok(format!("{signing_input}.{}", b64(&sig)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("certs")
            .join(name)
    }

    fn part(jwt: &str, i: usize) -> serde_json::Value {
        let p = jwt.split('.').nth(i).expect("part");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn the_assertion_is_signed_by_the_certificates_key_and_names_its_thumbprint() {
        let key = std::fs::read(fixture("mirror-app.key")).expect("key");
        let c = Certificate::load(&fixture("mirror-app.pem"), &key).expect("load");
        // The thumbprint openssl printed for the certificate.
        let want = std::fs::read_to_string(fixture("mirror-app.thumbprint")).expect("thumbprint");
        assert_eq!(c.thumbprint_hex(), want.trim());
        let url = "https://login.microsoftonline.com/t/oauth2/v2.0/token";
        let jwt = c.assertion("client-1", url, 1_000_000).expect("sign");
        let h = part(&jwt, 0);
        assert_eq!(h["alg"], "RS256");
        assert_eq!(h["typ"], "JWT");
        let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h["x5t"].as_str().expect("x5t"))
            .expect("x5t base64url");
        let hex: String = x5t.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(hex, want.trim());
        let cl = part(&jwt, 1);
        assert_eq!(cl["aud"], url);
        assert_eq!(cl["iss"], "client-1");
        assert_eq!(cl["sub"], "client-1");
        assert_eq!(cl["nbf"], 1_000_000);
        assert_eq!(cl["exp"], 1_000_600);
        assert_eq!(cl["jti"].as_str().map(str::len), Some(32));
        // The signature verifies with the public key openssl extracted from the key file.
        let public = std::fs::read(fixture("mirror-app.pubkey.der")).expect("pubkey");
        let (input, sig) = jwt.rsplit_once('.').expect("three parts");
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .expect("sig");
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            public,
        )
        .verify(input.as_bytes(), &sig)
        .expect("signature verifies");
        // Two assertions never share a jti.
        let again = c.assertion("client-1", url, 1_000_000).expect("sign");
        assert_ne!(part(&again, 1)["jti"], cl["jti"]);
    }

    #[test]
    fn pkcs1_keys_load_and_foreign_or_broken_keys_are_refused_by_name() {
        let pkcs1 = std::fs::read(fixture("mirror-app.pkcs1.key")).expect("key");
        assert!(Certificate::load(&fixture("mirror-app.pem"), &pkcs1).is_ok());
        let other = std::fs::read(fixture("mirror-other.key")).expect("key");
        let e = Certificate::load(&fixture("mirror-app.pem"), &other)
            .err()
            .expect("foreign key refused");
        assert!(e.contains("does not belong to the certificate"), "{e}");
        let e = Certificate::load(&fixture("mirror-app.pem"), b"not a key")
            .err()
            .expect("garbage refused");
        assert!(
            e.starts_with("mirror.client_key: not a PEM private key"),
            "{e}"
        );
        let e = Certificate::load(&fixture("mirror-app.pubkey.der"), &pkcs1)
            .err()
            .expect("no certificate");
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = Certificate::load(&fixture("missing.pem"), &pkcs1)
            .err()
            .expect("missing file");
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let s = AppCredential::Secret("s3cr3t-value".into());
        assert!(!format!("{s:?}").contains("s3cr3t"));
    }
}

//! TLS to the upstream: the trust roots (the compiled-in Mozilla bundle, the
//! PEM certificates of `upstream_ca_file`, and with `upstream_system_roots`
//! the operating system's store) and the rustls client
//! configuration the pooled client uses, with ALPN offering h2 and http/1.1.
//!
//! A certificate the roots do not vouch for is refused with an error that
//! names `upstream_ca_file`: the usual cause is an egress proxy that re-signs
//! TLS with a private CA, and the producer's 502 should say what to change.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

/// The keys this module reads; every error names one.
pub const CA_FILE_KEY: &str = "upstream_ca_file";
pub const SYSTEM_ROOTS_KEY: &str = "upstream_system_roots";

/// Why the upstream's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file named by `upstream_ca_file` is missing or not usable.
    #[error("invalid value for `{CA_FILE_KEY}`: {0}")]
    CaFile(String),
    /// `upstream_system_roots` is on but the store gave no usable certificate.
    #[error("`{SYSTEM_ROOTS_KEY}` is true, but the system certificate store gave no usable certificate{0}")]
    SystemRoots(String),
    #[error("cannot build the upstream TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The PEM certificates in `path`: at least one, each usable as a trust anchor.
pub fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let pem =
        std::fs::read(path).map_err(|e| TlsError::CaFile(format!("cannot read {shown}: {e}")))?;
    let bad = |reason: String| TlsError::CaFile(format!("{shown} {reason}"));
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not PEM ({e})")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (expected one or more PEM `-----BEGIN CERTIFICATE-----` blocks)"
                .into(),
        ));
    }
    // Parsing each now turns a garbled certificate into a start-up error
    // rather than a failed handshake later.
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| {
            bad(format!(
                "certificate #{} is not usable as a root: {e}",
                i + 1
            ))
        })?;
    }
    Ok(certs)
}

/// The rustls configuration for the upstream: compiled-in roots plus those of
/// `ca_file` and, with `system_roots`, the system store's; ALPN h2 then http/1.1.
pub fn client_config(
    ca_file: Option<&Path>,
    system_roots: bool,
) -> Result<rustls::ClientConfig, TlsError> {
    // The ring provider, chosen here rather than the process-wide default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in read_roots(path)? {
            roots.add(cert)?;
        }
    }
    if system_roots {
        add_system_roots(&mut roots)?;
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let verifier = Explained {
        inner,
        ca_file: ca_file.map(|p| p.display().to_string()),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Adds the system store's certificates. A store commonly holds a few that
/// webpki cannot parse; those are skipped (logged), but finding none is an error.
fn add_system_roots(roots: &mut RootCertStore) -> Result<(), TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
    let (added, skipped) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = if errors.is_empty() {
            String::new()
        } else {
            format!(" ({})", errors.join("; "))
        };
        return Err(TlsError::SystemRoots(why));
    }
    if skipped > 0 || !errors.is_empty() {
        tracing::warn!(
            added,
            skipped,
            errors = %errors.join("; "),
            "{SYSTEM_ROOTS_KEY}: some of the system store could not be used"
        );
    }
    tracing::info!(
        added,
        "{SYSTEM_ROOTS_KEY}: trusting the system certificate store"
    );
    Ok(())
}

/// The webpki verifier, unchanged, except that a certificate from an unknown
/// issuer is refused with a text that says which key fixes it.
#[derive(Debug)]
struct Explained {
    inner: Arc<WebPkiServerVerifier>,
    ca_file: Option<String>,
}

/// The reason carried by a refused certificate (shown in the producer's 502).
#[derive(Debug)]
struct Untrusted {
    cause: CertificateError,
    ca_file: Option<String>,
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the upstream's certificate is not signed by a trusted root ({:?}); if a proxy or a private CA signs it, put that CA's certificate (PEM) in `{CA_FILE_KEY}`",
            self.cause
        )?;
        match &self.ca_file {
            Some(path) => write!(f, " (now {path})"),
            None => write!(f, " (now unset)"),
        }
    }
}

impl std::error::Error for Untrusted {}

impl ServerCertVerifier for Explained {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|err| match err {
                // `Other` so the text shows as written (a certificate error's
                // payload would be shown in its `Debug` form).
                rustls::Error::InvalidCertificate(
                    cause @ (CertificateError::UnknownIssuer | CertificateError::BadSignature),
                ) => rustls::Error::Other(OtherError(Arc::new(Untrusted {
                    cause,
                    ca_file: self.ca_file.clone(),
                }))),
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn without_a_ca_file_the_compiled_in_roots_serve() {
        let config = client_config(None, false).expect("builds");
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_missing_file_names_the_key_and_the_path() {
        let err = client_config(Some(Path::new("/nonexistent/ca.pem")), false).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`upstream_ca_file`"), "{text}");
        assert!(text.contains("/nonexistent/ca.pem"), "{text}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let f = file("just some text\n");
        let text = client_config(Some(f.path()), false)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("`upstream_ca_file`") && text.contains("no certificate"),
            "{text}"
        );
    }

    #[test]
    fn a_garbled_certificate_is_refused() {
        let f = file("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
        let text = client_config(Some(f.path()), false)
            .unwrap_err()
            .to_string();
        assert!(text.contains("`upstream_ca_file`"), "{text}");
        assert!(text.contains("certificate #1"), "{text}");
    }

    #[test]
    fn the_config_key_is_checked_when_loading_and_empty_means_none() {
        use crate::config::{Config, Sources};
        let env = [(
            "INLETD_UPSTREAM_CA_FILE".to_owned(),
            "/nonexistent/ca.pem".to_owned(),
        )];
        let err = Config::load(Sources {
            env: env.into_iter().collect(),
            ..Sources::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`upstream_ca_file`") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );
        let file = ("t.toml".to_owned(), "upstream_ca_file = \"\"\n".to_owned());
        let config = Config::load(Sources {
            file: Some(file),
            ..Sources::default()
        })
        .expect("empty means none");
        assert_eq!(config.upstream_ca_file.0, None);
    }

    #[test]
    fn the_system_roots_switch_reads_the_same_everywhere() {
        use crate::config::{Config, Sources};
        let load = |file: &str, var: Option<&str>| {
            let env = var.map(|v| ("INLETD_UPSTREAM_SYSTEM_ROOTS".to_owned(), v.to_owned()));
            Config::load(Sources {
                file: Some(("t.toml".to_owned(), file.to_owned())),
                env: env.into_iter().collect(),
                ..Sources::default()
            })
        };
        let on = |c: Config| c.upstream_system_roots.0;
        assert!(!on(load("", None).expect("default")));
        assert!(on(load("upstream_system_roots = true", None).expect("bool")));
        // What `check-config` prints must load back.
        assert!(on(
            load("upstream_system_roots = \"true\"", None).expect("text")
        ));
        assert!(!on(
            load("upstream_system_roots = true", Some("FALSE")).expect("env")
        ));
        for bad in [
            "upstream_system_roots = 1",
            "upstream_system_roots = \"yes\"",
        ] {
            let err = load(bad, None).unwrap_err().to_string();
            assert!(err.contains("upstream_system_roots"), "{err}");
        }
        let err = load("", Some("maybe")).unwrap_err().to_string();
        assert!(
            err.contains("`upstream_system_roots`") && err.contains("maybe"),
            "{err}"
        );
    }
}

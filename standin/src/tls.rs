//! HTTPS for the stand-in: a throwaway CA and a server certificate for
//! `127.0.0.1` and `localhost` signed by it, both generated at start-up
//! (rcgen), and which HTTP versions ALPN offers. The CA's certificate (PEM)
//! is what a client must trust, as inletd does with `upstream_ca_file`.

use std::fmt;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The HTTP versions the stand-in offers in ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    /// `h2` and `http/1.1`: the client's preference wins (as with AEP).
    Both,
    /// Only `http/1.1`.
    Http1,
    /// Only `h2`.
    H2,
}

/// A generated CA, the server certificate it signed, and the rustls server
/// configuration that presents it.
#[derive(Clone)]
pub struct StandInTls {
    ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for StandInTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandInTls")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

/// Why the certificates or the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot generate the stand-in's certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("cannot build the stand-in's TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

impl StandInTls {
    /// A new CA named `name` and a server certificate for 127.0.0.1 and localhost.
    pub fn generate(name: &str, alpn: Alpn) -> Result<StandInTls, TlsSetupError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "aep-standin");
        let leaf_key = KeyPair::generate()?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)?;
        config.alpn_protocols = match alpn {
            Alpn::Both => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::H2 => vec![b"h2".to_vec()],
        };
        Ok(StandInTls {
            ca_pem: ca.pem(),
            config: Arc::new(config),
        })
    }

    /// The CA certificate in PEM: what a client must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.config))
    }
}

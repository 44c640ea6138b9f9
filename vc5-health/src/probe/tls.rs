//! The TLS client of https checks: rustls with the ring provider.
//!
//! The provider is passed explicitly rather than installed process-wide, so the
//! daemon (or anything else linked with it) keeps its own choice. Client
//! configurations for the two common cases, no verification and web PKI roots, are
//! built once and shared by every check; one with its own CA set gets its own.
//!
//! Session resumption is off: a resumed handshake skips the certificate and the
//! key, so a real whose certificate expired or whose key was replaced would keep
//! passing, and every check would share a cache sized for one client.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::outcome::Failure;
use crate::spec::{SpecError, TlsVerify};

/// A TLS client for one check: its configuration and the server name it sends.
#[derive(Clone)]
pub(super) struct Client {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("name", &self.name).finish()
    }
}

impl Client {
    /// The client for `verify`, naming the server `host` (the `Host` header value
    /// without a port) or, without one, the target's IP address.
    pub(super) fn new(
        verify: &TlsVerify,
        host: Option<&str>,
        target: SocketAddr,
    ) -> Result<Client, SpecError> {
        let name = match host {
            Some(host) => server_name(host)?,
            None => ServerName::IpAddress(target.ip().into()),
        };
        let config = match verify {
            TlsVerify::None => shared(&NO_VERIFY, || build(Verify::None))?,
            TlsVerify::WebPki => shared(&WEBPKI, || build(Verify::WebPki))?,
            TlsVerify::Ca(certs) => build(Verify::Roots(certs.certs()))?,
        };
        Ok(Client {
            connector: TlsConnector::from(config),
            name,
        })
    }

    /// Runs the handshake on `stream`.
    pub(super) async fn handshake(
        &self,
        stream: TcpStream,
    ) -> Result<TlsStream<TcpStream>, Failure> {
        self.connector
            .connect(self.name.clone(), stream)
            .await
            .map_err(|e| {
                // rustls errors come wrapped in an io::Error of kind InvalidData;
                // socket errors are themselves and read better that way.
                let reason = match e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    Some(tls) => tls.to_string(),
                    None => Failure::from_io(&e).to_string(),
                };
                Failure::Tls(reason)
            })
    }
}

/// The TLS server name for a `Host` value: an IP address or a DNS name, any
/// `:port` suffix removed.
fn server_name(host: &str) -> Result<ServerName<'static>, SpecError> {
    let bare = if let Some(inner) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`
        inner.split(']').next().unwrap_or(inner)
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(bare.to_owned()).map_err(|_| SpecError::ServerName(host.to_owned()))
}

static NO_VERIFY: OnceLock<Result<Arc<ClientConfig>, SpecError>> = OnceLock::new();
static WEBPKI: OnceLock<Result<Arc<ClientConfig>, SpecError>> = OnceLock::new();

fn shared(
    cell: &'static OnceLock<Result<Arc<ClientConfig>, SpecError>>,
    make: impl FnOnce() -> Result<Arc<ClientConfig>, SpecError>,
) -> Result<Arc<ClientConfig>, SpecError> {
    cell.get_or_init(make).clone()
}

enum Verify<'a> {
    None,
    WebPki,
    Roots(&'a [CertificateDer<'static>]),
}

fn build(verify: Verify<'_>) -> Result<Arc<ClientConfig>, SpecError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SpecError::Tls(e.to_string()))?;
    let mut config = match verify {
        Verify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        Verify::WebPki => {
            let roots: RootCertStore = webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect();
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verify::Roots(certs) => {
            let mut roots = RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| SpecError::Ca(e.to_string()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.resumption = Resumption::disabled();
    // Offering only HTTP/1.1 keeps a server that prefers HTTP/2 from choosing it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any certificate but still checks the handshake signature, so the
/// server must hold the private key of the certificate it presents: a broken key
/// pairing still fails the check.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_drop_ports() {
        let name = |h: &str| server_name(h).map(|n| n.to_str().into_owned());
        assert_eq!(name("example.com"), Ok("example.com".into()));
        assert_eq!(name("example.com:8443"), Ok("example.com".into()));
        assert_eq!(name("10.0.0.1:443"), Ok("10.0.0.1".into()));
        assert_eq!(name("[::1]:443"), Ok("::1".into()));
        assert_eq!(name("::1"), Ok("::1".into()));
        assert!(name("bad name").is_err());
    }

    #[test]
    fn shared_configurations_are_shared() {
        let target: SocketAddr = "127.0.0.1:443".parse().unwrap();
        let a = Client::new(&TlsVerify::None, None, target).unwrap();
        let b = Client::new(&TlsVerify::None, Some("x.test"), target).unwrap();
        assert!(Arc::ptr_eq(a.connector.config(), b.connector.config()));
    }
}

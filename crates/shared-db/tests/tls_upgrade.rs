//! TLS upgrade when the client sends its TLS ClientHello in the same segment as the SSL
//! request (nothing in the protocol makes it wait), and a full login over that TLS session.

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::raw::{framed, handshake_response};
use common::Operator;
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket};
use mysql_common::proto::MyDeserialize;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use testkit::MariaDb;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Accepts the operator's self-signed certificate (what `mariadb --ssl` without CA does).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Holds back `pending` and sends it together with the first write (the ClientHello).
struct Coalesce<S> {
    pending: Vec<u8>,
    inner: S,
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if !self.pending.is_empty() {
            let mut all = std::mem::take(&mut self.pending);
            let prefix = all.len();
            all.extend_from_slice(data);
            // Loopback with an empty send buffer takes the whole small write at once.
            return match Pin::new(&mut self.inner).poll_write(cx, &all) {
                Poll::Ready(Ok(n)) if n == all.len() => Poll::Ready(Ok(n - prefix)),
                Poll::Ready(Ok(n)) => {
                    Poll::Ready(Err(std::io::Error::other(format!("short write {n}"))))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => {
                    all.truncate(prefix);
                    self.pending = all;
                    Poll::Pending
                }
            };
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

async fn read_packet<S: AsyncRead + Unpin>(s: &mut S) -> (u8, Vec<u8>) {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).await.unwrap();
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).await.unwrap();
    (h[3], p)
}

#[tokio::test]
async fn client_hello_in_the_same_segment_as_the_ssl_request() {
    let db = MariaDb::start().unwrap();
    let op = Operator::external(&db, &[]);
    let run = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", op.port()))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        let (_, greeting) = read_packet(&mut tcp).await;
        let hs = HandshakePacket::deserialize((), &mut ParseBuf(&greeting)).unwrap();
        assert!(hs.capabilities().contains(CapabilityFlags::CLIENT_SSL));
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_SSL;
        let mut ssl_request = caps.bits().to_le_bytes().to_vec();
        ssl_request.extend_from_slice(&(1u32 << 24).to_le_bytes());
        ssl_request.push(45);
        ssl_request.extend_from_slice(&[0u8; 23]);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = Coalesce {
            pending: framed(1, &ssl_request),
            inner: tcp,
        };
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), stream)
            .await
            .expect("TLS handshake with the ClientHello coalesced");
        let token =
            mysql_common::scramble::scramble_native(&hs.nonce(), db.password().as_bytes()).unwrap();
        let mut resp = handshake_response("root", &token, AuthPlugin::MysqlNativePassword);
        resp[..4].copy_from_slice(&caps.bits().to_le_bytes());
        tls.write_all(&framed(2, &resp)).await.unwrap();
        let (_, ok) = read_packet(&mut tls).await;
        assert_eq!(ok[0], 0x00, "login over TLS failed: {ok:?}");
        tls.write_all(&framed(0, b"\x03SELECT 7")).await.unwrap();
        let (_, cols) = read_packet(&mut tls).await;
        assert_eq!(cols, vec![1]);
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("TLS upgrade hung");
}

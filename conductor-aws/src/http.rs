//! The HTTP client every SDK client of one configuration shares.
//!
//! The SDK's default client builds a TLS connector, and with it a store of
//! the system's root certificates, each time an SDK client is constructed:
//! the credential chain's STS client and every EC2 client, although a run
//! may never make an HTTPS request (moto, a local endpoint). Building that
//! store was a fifth of a run's CPU. [`LazyTls`] builds each connector when
//! the first request needs it, once per timeout setting and kind of
//! request: `http://` requests over plain TCP with no root store, the rest
//! over TLS verified against the system's roots, as the SDK's default does.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_async::rt::sleep::SharedAsyncSleep;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_http_client::Connector;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// What a connector is built for: its timeouts and whether it verifies TLS.
type Key = (Option<Duration>, Option<Duration>, Transport);

/// How a request travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Transport {
    /// Plain TCP (`http://`, and no proxy reached over TLS): no root store.
    Plain,
    /// TLS verified against the system's root certificates.
    Tls,
}

impl Transport {
    /// `http://` reached without a proxy over HTTPS is plain; anything
    /// else is TLS, the safe side for a URI this does not recognise.
    fn of(uri: &str, http_proxy_tls: bool) -> Self {
        if has_scheme(uri, "http://") && !http_proxy_tls {
            Transport::Plain
        } else {
            Transport::Tls
        }
    }
}

/// Whether `url` starts with `scheme` (`http://`), in any case.
fn has_scheme(url: &str, scheme: &str) -> bool {
    url.get(..scheme.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
}

/// Whether `http://` requests go through a proxy reached over HTTPS (the
/// proxy variables the SDK's client reads for them), which needs the
/// system's roots even for a plain request.
fn http_proxy_needs_tls() -> bool {
    ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .any(|url| has_scheme(&url, "https://"))
}

/// An SDK [`HttpClient`] whose connectors are built at their first request,
/// so that no root certificate is loaded before an HTTPS request needs one.
/// Clones share their connectors (and the connection pools inside them).
#[derive(Clone, Debug, Default)]
pub(crate) struct LazyTls {
    connectors: Arc<Mutex<HashMap<Key, SharedHttpConnector>>>,
}

impl LazyTls {
    /// The connector for `key`, built the first time it is asked for, the
    /// way the SDK's default client builds its own (rustls with aws-lc, the
    /// proxy from the environment).
    fn connector(
        &self,
        key: Key,
        settings: &HttpConnectorSettings,
        sleep: &Option<SharedAsyncSleep>,
    ) -> SharedHttpConnector {
        let mut connectors = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        connectors
            .entry(key)
            .or_insert_with(|| {
                let mut builder = Connector::builder().tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ));
                builder.set_connector_settings(Some(settings.clone()));
                builder.set_sleep_impl(sleep.clone());
                builder.set_proxy_config(Some(ProxyConfig::from_env()));
                if key.2 == Transport::Plain {
                    let none = TlsContext::builder()
                        .with_trust_store(TrustStore::empty().with_native_roots(false))
                        .build()
                        .expect("a TLS context without roots is valid");
                    builder = builder.tls_context(none);
                }
                SharedHttpConnector::new(builder.build())
            })
            .clone()
    }
}

impl HttpClient for LazyTls {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(ByScheme {
            client: self.clone(),
            settings: settings.clone(),
            sleep: components.sleep_impl(),
        })
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new("hyper", Some(Cow::Borrowed("1.x"))))
    }
}

/// The connector of one attempt's settings: picks the plain or the TLS
/// connector by the request's URI.
#[derive(Debug)]
struct ByScheme {
    client: LazyTls,
    settings: HttpConnectorSettings,
    sleep: Option<SharedAsyncSleep>,
}

impl HttpConnector for ByScheme {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let key = (
            self.settings.connect_timeout(),
            self.settings.read_timeout(),
            Transport::of(request.uri(), http_proxy_needs_tls()),
        );
        self.client
            .connector(key, &self.settings, &self.sleep)
            .call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_skips_tls() {
        assert_eq!(
            Transport::of("http://127.0.0.1:5000/", false),
            Transport::Plain
        );
        assert_eq!(Transport::of("HTTP://moto:5000", false), Transport::Plain);
        // Through a proxy reached over HTTPS, even plain requests need roots.
        assert_eq!(
            Transport::of("http://127.0.0.1:5000/", true),
            Transport::Tls
        );
        for uri in [
            "https://ec2.us-east-1.amazonaws.com/",
            "HTTPS://ec2.amazonaws.com",
            "httpx://odd",
            "http:/missing-slash",
            "",
        ] {
            assert_eq!(Transport::of(uri, false), Transport::Tls, "{uri}");
        }
    }
}

//! A client of `runtime serve`: the generated clients on one channel, with
//! the API key sent on every call.

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use crate::pb::admin_client::AdminClient;
use crate::pb::executions_client::ExecutionsClient;
use crate::pb::plugins_client::PluginsClient;
use crate::pb::workflows_client::WorkflowsClient;

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Debug, Clone)]
pub struct ApiKey(AsciiMetadataValue);

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A connection to a server, as one key.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    key: ApiKey,
}

impl Client {
    /// Connects to `url` (`http://127.0.0.1:7233`) with API key `key`.
    pub async fn connect(url: &str, key: &str) -> Result<Self, String> {
        Self::connect_with(url, key, None).await
    }

    /// Connects to `url` with API key `key`; an `https://` URL is checked
    /// against the certificate authority `ca` (PEM), which must be given.
    pub async fn connect_with(url: &str, key: &str, ca: Option<&[u8]>) -> Result<Self, String> {
        let key = format!("Bearer {key}")
            .parse()
            .map_err(|_| "the API key holds characters a header cannot".to_owned())?;
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("`{url}` is not a server address: {e}"))?;
        if url.starts_with("https://") {
            let ca = ca.ok_or_else(|| {
                format!(
                    "`{url}` speaks TLS: give the certificate authority that signed its certificate"
                )
            })?;
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("TLS for {url}: {e}"))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        Ok(Self {
            channel,
            key: ApiKey(key),
        })
    }

    /// The Executions service.
    pub fn executions(&self) -> ExecutionsClient<InterceptedService<Channel, ApiKey>> {
        ExecutionsClient::with_interceptor(self.channel.clone(), self.key.clone())
    }

    /// The Admin service.
    pub fn admin(&self) -> AdminClient<InterceptedService<Channel, ApiKey>> {
        AdminClient::with_interceptor(self.channel.clone(), self.key.clone())
    }

    /// The Plugins service.
    pub fn plugins(&self) -> PluginsClient<InterceptedService<Channel, ApiKey>> {
        PluginsClient::with_interceptor(self.channel.clone(), self.key.clone())
    }

    /// Installs the component `bytes` with `header` (name, version, grants,
    /// what messages call it), sent in chunks of 1 MiB, well under the
    /// server's 4 MiB per message.
    pub async fn install(
        &self,
        header: crate::pb::InstallHeader,
        bytes: &[u8],
    ) -> Result<crate::pb::Plugin, Status> {
        let first = crate::pb::InstallChunk {
            header: Some(header),
            data: Vec::new(),
        };
        let rest = bytes.chunks(1 << 20).map(|data| crate::pb::InstallChunk {
            header: None,
            data: data.to_vec(),
        });
        let chunks: Vec<_> = std::iter::once(first).chain(rest).collect();
        let plugin = self.plugins().install(tokio_stream::iter(chunks)).await?;
        Ok(plugin.into_inner())
    }

    /// The Workflows service.
    pub fn workflows(&self) -> WorkflowsClient<InterceptedService<Channel, ApiKey>> {
        WorkflowsClient::with_interceptor(self.channel.clone(), self.key.clone())
    }
}

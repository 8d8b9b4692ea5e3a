//! A small keep-alive HTTP/1.1 client for Tandem's API that signs requests: used by the demo's
//! bots, the load tool, the wallet and the end-to-end tests.

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::Arc;
use tokio::net::TcpStream;

#[derive(Clone, Debug)]
pub enum Auth {
    None,
    /// API key and secret: every request is signed.
    Key { key: String, secret: String },
    /// Operator bearer token.
    Operator(String),
    /// A wallet's device key: every request is signed with BIP-340.
    Device(Arc<crate::wallet::device::DeviceKey>),
    /// A co-signer's identity key (the same kind of key as a device key), registered by the
    /// operator: signs MPC relay requests like a device, under `X-Tandem-Cosigner`.
    Cosigner(Arc<crate::wallet::device::DeviceKey>),
}

pub struct Client {
    host: String,
    sender: SendRequest<Full<Bytes>>,
    last_ts: u64,
}

/// `http://127.0.0.1:8080` -> `127.0.0.1:8080`
pub fn host_of(base_url: &str) -> anyhow::Result<String> {
    let host = base_url.strip_prefix("http://").ok_or_else(|| anyhow!("only http:// URLs are supported: {base_url}"))?;
    Ok(host.trim_end_matches('/').to_string())
}

impl Client {
    pub async fn connect(base_url: &str) -> anyhow::Result<Client> {
        let host = host_of(base_url)?;
        let sender = Self::open(&host).await?;
        Ok(Client { host, sender, last_ts: 0 })
    }

    async fn open(host: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(host).await.with_context(|| format!("connecting to {host}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// A connection the server closed while idle (its keep-alive timeout) is replaced before a
    /// request goes out; nothing was sent on it, so nothing can be sent twice.
    async fn ready(&mut self) -> anyhow::Result<()> {
        if self.sender.is_closed() || self.sender.ready().await.is_err() {
            self.sender = Self::open(&self.host).await?;
            self.sender.ready().await?;
        }
        Ok(())
    }

    /// Sends one request; answers the status and the JSON body (`Null` when empty or not JSON).
    pub async fn send(&mut self, method: &str, path_and_query: &str, body: Option<&Value>, auth: &Auth) -> anyhow::Result<(u16, Value)> {
        let body = body.map(serde_json::to_vec).transpose()?.unwrap_or_default();
        self.send_raw(method, path_and_query, body, auth).await
    }

    fn next_timestamp(&mut self) -> u64 {
        // Never backwards, even if the wall clock steps back.
        self.last_ts = crate::node::now_millis().max(self.last_ts);
        self.last_ts
    }

    pub async fn send_raw(&mut self, method: &str, path_and_query: &str, body: Vec<u8>, auth: &Auth) -> anyhow::Result<(u16, Value)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", &self.host)
            .header("content-type", "application/json");
        match auth {
            Auth::None => {}
            Auth::Key { key, secret } => {
                let ts = self.next_timestamp();
                let sig = tandem_gateway::sign(secret, ts, method, path_and_query, &body);
                req = req
                    .header("x-tandem-key", key)
                    .header("x-tandem-timestamp", ts.to_string())
                    .header("x-tandem-signature", sig);
            }
            Auth::Operator(token) => req = req.header("authorization", format!("Bearer {token}")),
            Auth::Device(device) => {
                let ts = self.next_timestamp();
                req = req
                    .header("x-tandem-device", device.pubkey_hex())
                    .header("x-tandem-timestamp", ts.to_string())
                    .header("x-tandem-signature", device.sign_request(ts, method, path_and_query, &body));
            }
            Auth::Cosigner(key) => {
                let ts = self.next_timestamp();
                req = req
                    .header("x-tandem-cosigner", key.pubkey_hex())
                    .header("x-tandem-timestamp", ts.to_string())
                    .header("x-tandem-signature", key.sign_request(ts, method, path_and_query, &body));
            }
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        self.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }
}

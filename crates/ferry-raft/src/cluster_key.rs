//! Who may call the internal service. Raft traffic and forwarded requests share the public gRPC
//! port, so without a check anyone who reaches that port could vote in elections, append entries
//! or install a snapshot. Every node of a cluster derives the same key from the cluster secret;
//! callers attach it to each internal call and the service refuses calls without it.
//!
//! The key travels in the clear like the rest of the traffic (there is no TLS): it keeps out
//! clients and stray processes, not someone who can read the network between nodes.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata entry that carries the key.
const CLUSTER_KEY_HEADER: &str = "x-ferry-cluster-key";

/// A key derived from the cluster secret (the secret itself never leaves the node, so one reused
/// elsewhere is not exposed by the traffic).
#[derive(Clone)]
pub struct ClusterKey {
    /// Hex, so it is valid metadata; cloned into every call (a reference count, not a copy).
    token: AsciiMetadataValue,
}

impl ClusterKey {
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any size");
        mac.update(b"ferry internal service v1");
        let token = hex::encode(mac.finalize().into_bytes());
        Self {
            token: AsciiMetadataValue::try_from(token).expect("hex is valid metadata"),
        }
    }

    /// A key nobody else knows: for a single-node cluster, whose internal service has no callers.
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        Self::from_secret(&secret)
    }

    /// Whether `presented` is this key, in time that does not depend on where they differ.
    fn admits(&self, presented: &[u8]) -> bool {
        self.token.as_bytes().ct_eq(presented).into()
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(<redacted>)")
    }
}

/// Client side: attaches the key to every internal call.
#[derive(Clone, Debug)]
pub struct AttachClusterKey(ClusterKey);

impl AttachClusterKey {
    pub fn new(key: ClusterKey) -> Self {
        Self(key)
    }
}

impl Interceptor for AttachClusterKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(CLUSTER_KEY_HEADER, self.0.token.clone());
        Ok(request)
    }
}

/// Server side: refuses internal calls that do not carry the key.
#[derive(Clone, Debug)]
pub struct RequireClusterKey(ClusterKey);

impl RequireClusterKey {
    pub fn new(key: ClusterKey) -> Self {
        Self(key)
    }
}

impl Interceptor for RequireClusterKey {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request.metadata().get(CLUSTER_KEY_HEADER);
        if presented.is_some_and(|value| self.0.admits(value.as_bytes())) {
            return Ok(request);
        }
        metrics::counter!("ferry_internal_unauthenticated_total").increment(1);
        tracing::debug!(
            peer = ?request.remote_addr(),
            "refused an internal call without the cluster key"
        );
        Err(Status::unauthenticated(
            "the internal service takes calls from members of this cluster only (cluster secret missing or different)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(required: &ClusterKey, attached: Option<&ClusterKey>) -> Result<(), Status> {
        let mut request = Request::new(());
        if let Some(key) = attached {
            request = AttachClusterKey::new(key.clone()).call(request)?;
        }
        RequireClusterKey::new(required.clone())
            .call(request)
            .map(|_| ())
    }

    #[test]
    fn only_the_same_secret_is_admitted() {
        let key = ClusterKey::from_secret(b"s3cret");
        assert!(check(&key, Some(&ClusterKey::from_secret(b"s3cret"))).is_ok());
        let refused = check(&key, Some(&ClusterKey::from_secret(b"s3cret!"))).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            check(&key, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(check(&key, Some(&ClusterKey::random())).is_err());
    }

    #[test]
    fn the_secret_itself_is_not_sent() {
        let key = ClusterKey::from_secret(b"s3cret");
        let request = AttachClusterKey::new(key).call(Request::new(())).unwrap();
        let sent = request.metadata().get(CLUSTER_KEY_HEADER).unwrap();
        assert!(!sent.to_str().unwrap().contains("s3cret"));
        assert_eq!(sent.len(), 64);
    }
}

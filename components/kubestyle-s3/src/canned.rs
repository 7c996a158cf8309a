//! An S3 client whose server is a function: every request is answered in process with the
//! status and body it returns. For tests and fuzzing of what this crate makes of a server's
//! answers (a hostile listing, an impossible size) without a server or a socket.

use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region, StalledStreamProtectionConfig};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;

type Answer = dyn Fn(&HttpRequest) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync;

#[derive(Clone)]
struct Canned(Arc<Answer>);

impl std::fmt::Debug for Canned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Canned")
    }
}

impl HttpConnector for Canned {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let (status, headers, body) = (self.0)(&request);
        let status = StatusCode::try_from(status)
            .unwrap_or_else(|_| StatusCode::try_from(500).expect("500 is a status code"));
        let mut r = HttpResponse::new(status, SdkBody::from(body));
        for (k, v) in headers {
            r.headers_mut().insert(k, v);
        }
        HttpConnectorFuture::ready(Ok(r))
    }
}

impl HttpClient for Canned {
    fn http_connector(
        &self,
        _: &HttpConnectorSettings,
        _: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// A client for `http://canned.invalid` (path-style, one attempt, dummy credentials) whose
/// every request gets `answer(request)`: (HTTP status, body).
pub fn client(answer: impl Fn(&HttpRequest) -> (u16, Vec<u8>) + Send + Sync + 'static) -> Client {
    client_with_headers(move |r| {
        let (status, body) = answer(r);
        (status, Vec::new(), body)
    })
}

/// [`client`] whose answers also carry headers (a HEAD's `Content-Length`, say).
pub fn client_with_headers(
    answer: impl Fn(&HttpRequest) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync + 'static,
) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("canned", "canned", None, None, "canned"))
        .endpoint_url("http://canned.invalid")
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .http_client(Canned(Arc::new(answer)))
        .build();
    Client::from_conf(conf)
}

/// A ListObjectsV2 page listing `entries` (key, size as written in the XML) under `prefix`.
pub fn listing(prefix: &str, entries: &[(&str, &str)]) -> Vec<u8> {
    let contents: String = entries
        .iter()
        .map(|(k, size)| {
            format!("<Contents><Key>{k}</Key><Size>{size}</Size><ETag>\"e\"</ETag></Contents>")
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult \
         xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>bkt</Name>\
         <Prefix>{prefix}</Prefix><KeyCount>{}</KeyCount><MaxKeys>1000</MaxKeys>\
         <IsTruncated>false</IsTruncated>{contents}</ListBucketResult>",
        entries.len()
    )
    .into_bytes()
}

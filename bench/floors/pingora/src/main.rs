//! Floor proxy on pingora: bearer check, credential swap, forward to 127.0.0.1:18080 over
//! pingora's upstream keep-alive pool, nothing else.
//!
//! Usage: floor-pingora [LISTEN_ADDR] [steal|nosteal]   (default 127.0.0.1:17174 steal)
//! "steal" = one tokio multi_thread runtime with 1 worker (pingora's default);
//! "nosteal" = pingora's per-thread current_thread runtimes (1 thread).

use async_trait::async_trait;
use pingora_core::Result;
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;
use pingora_proxy::{ProxyHttp, Session};

const EXPECTED: &[u8] = b"Bearer floor-token-0123456789abcdef";
const PREFIX: &str = "/proxy/railway";

struct Floor;

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let ok = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == EXPECTED);
        if !ok {
            session.respond_error(401).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new("127.0.0.1:18080", false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        if let Some(rest) = req.uri.path_and_query().and_then(|p| p.as_str().strip_prefix(PREFIX)) {
            let rest = if rest.is_empty() { "/" } else { rest };
            req.set_uri(rest.parse().expect("valid path"));
        }
        req.insert_header(http::header::AUTHORIZATION, "Bearer upstream-credential")?;
        Ok(())
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:17174".into());
    let steal = args.next().as_deref() != Some("nosteal");
    let conf = ServerConf {
        threads: 1,
        work_stealing: steal,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Floor);
    proxy.add_tcp(&addr);
    server.add_service(proxy);
    server.run_forever();
}

//! The admin HTTP API: every endpoint through the router without a socket, the
//! metrics after real TCP traffic, and the server's bind, serve and shutdown.
//!
//! Router tests call `tower::ServiceExt::oneshot` on a fresh router over a dispatcher
//! fed directly; the metrics and server tests use loopback sockets on port 0.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use loadwise_core::dispatcher::{DispatchSettings, Dispatcher};
use loadwise_core::model::ConnectionId;
use loadwise_core::model::PickRequest;
use loadwise_core::registry::BackendId;
use loadwise_core::selection::BackendState;
use loadwise_protocol::v2::{self, ErrorCode, Message, Metric, MetricName, ServiceName};
use loadwise_protocol::{Heartbeat, IpField};
use loadwise_server::admin::{AdminConfig, AdminError, AdminServer, AdminState, endpoints, router};
use loadwise_server::legacy_report;
use loadwise_testkit::{TestServer, heartbeat, login, login_stale, send, wait_until, within};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

const TOKEN: &str = "correct horse battery staple";

/// A response, its body parsed as JSON where it is JSON.
struct Reply {
    status: StatusCode,
    content_type: String,
    headers: axum::http::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("JSON body ({e}): {}", self.text))
    }

    /// The `error` of a JSON error body.
    fn error(&self) -> String {
        assert!(self.content_type.starts_with("application/json"), "JSON error, got {}", self.content_type);
        self.json()["error"].as_str().expect("an error message").to_owned()
    }
}

fn dispatcher() -> Arc<Dispatcher> {
    Arc::new(Dispatcher::with_seed(DispatchSettings::default(), 7))
}

fn state(token: Option<&str>) -> AdminState {
    AdminState::new(
        dispatcher(),
        Arc::default(),
        AdminConfig { token: token.map(str::to_owned), ..AdminConfig::default() },
    )
}

/// Registers backend `id` at `ip:port` reporting `mem`, as a heartbeat on its connection would.
fn register(state: &AdminState, id: u64, mem: u8, ip: &str, port: u16) {
    let heartbeat = legacy_report(&Heartbeat { mem, ip: IpField::from_text(ip).unwrap(), port }).unwrap();
    state.dispatcher().heartbeat(ConnectionId(id), &heartbeat, Instant::now()).expect("registered");
}

async fn call(state: &AdminState, method: Method, uri: &str, bearer: Option<&str>) -> Reply {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router(state.clone()).oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let content_type =
        headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22).await.unwrap();
    Reply { status, content_type, headers, text: String::from_utf8(bytes.to_vec()).unwrap() }
}

async fn get(state: &AdminState, uri: &str) -> Reply {
    call(state, Method::GET, uri, None).await
}

/// An HTTP pick: a POST without a body.
async fn http_pick(state: &AdminState, uri: &str) -> Reply {
    post(state, uri, None).await
}

async fn post(state: &AdminState, uri: &str, bearer: Option<&str>) -> Reply {
    call(state, Method::POST, uri, bearer).await
}

#[tokio::test]
async fn healthz_answers_and_readyz_follows_the_ready_flag() {
    let state = state(None);
    let health = get(&state, "/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(get(&state, "/readyz").await.status, StatusCode::OK);

    state.set_ready(false);
    let ready = get(&state, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.error(), "the dispatcher is not serving");
    assert_eq!(get(&state, "/healthz").await.status, StatusCode::OK, "alive while not ready");

    state.ready_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get(&state, "/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn services_lists_the_default_service_with_counts_by_state() {
    let state = state(None);
    register(&state, 1, 10, "10.0.0.1", 7001);
    register(&state, 2, 20, "10.0.0.2", 7002);
    register(&state, 3, 30, "10.0.0.3", 7003);
    state.dispatcher().set_state(BackendId(2), BackendState::Draining).unwrap();

    let reply = get(&state, "/v1/services").await;
    assert_eq!(reply.status, StatusCode::OK);
    let services = reply.json()["services"].as_array().unwrap().clone();
    assert_eq!(services.len(), 1);
    let service = &services[0];
    assert_eq!(service["name"], "default");
    assert_eq!(service["default"], true);
    assert_eq!(service["policy"], "least-loaded");
    assert_eq!(service["scoring"], "memory");
    assert_eq!(service["backends"], 3);
    assert_eq!(service["ready"], 2);
    assert_eq!(service["states"], serde_json::json!({"ready": 2, "draining": 1, "maintenance": 0}));
}

#[tokio::test]
async fn the_default_service_is_the_configured_one_and_always_known() {
    let default_service = ServiceName::new("games").unwrap();
    let settings = DispatchSettings { default_service, ..DispatchSettings::default() };
    let state =
        AdminState::new(Arc::new(Dispatcher::with_seed(settings, 7)), Arc::default(), AdminConfig::default());

    let services = get(&state, "/v1/services").await.json();
    assert_eq!(
        services["services"],
        json!([{"name": "games", "default": true, "policy": "least-loaded",
        "scoring": "memory", "backends": 0, "ready": 0,
        "states": {"ready": 0, "draining": 0, "maintenance": 0}}])
    );
    let backends = get(&state, "/v1/services/games/backends").await;
    assert_eq!(backends.status, StatusCode::OK, "the default service is known while empty");
    assert_eq!(backends.json()["backends"], json!([]));
    let pick = http_pick(&state, "/v1/services/games/pick").await;
    assert_eq!(pick.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(pick.error(), "no live backend in service \"games\"");
    assert_eq!(get(&state, "/v1/services/default/backends").await.status, StatusCode::NOT_FOUND);

    register(&state, 1, 10, "10.0.0.1", 7001);
    let backends = get(&state, "/v1/services/games/backends").await.json();
    assert_eq!(backends["backends"][0]["protocol"], "legacy", "legacy backends join the default service");
    assert_eq!(http_pick(&state, "/v1/services/games/pick").await.json()["id"], 1);
}

#[tokio::test]
async fn backends_shows_every_field_of_every_backend() {
    let state = state(None);
    register(&state, 1, 42, "10.0.0.1", 7001);
    register(&state, 2, 120, "10.0.0.2", 7002);
    state.dispatcher().set_state(BackendId(2), BackendState::Maintenance).unwrap();
    let request = PickRequest::UNCLOCKED_LOGIN;
    assert!(state.dispatcher().pick(&request, Instant::now()).picked().is_some(), "a pick");

    let reply = get(&state, "/v1/services/default/backends").await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["service"], "default");
    assert_eq!(body["ttl_seconds"], 3.0);
    let backends = body["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2, "a backend in maintenance stays listed");

    let first = &backends[0];
    assert_eq!(first["id"], 1);
    assert_eq!(first["address"], "10.0.0.1:7001");
    assert_eq!(first["protocol"], "legacy");
    assert_eq!(first["state"], "ready");
    assert_eq!(first["operator_state"], "ready");
    assert_eq!(first["v2"], Value::Null);
    assert_eq!(first["reported"], serde_json::json!({"mem_percent": 42, "valid": true}));
    assert!(first["effective_load_percent"].as_f64().unwrap() > 42.0, "the pick raised the effective load");
    assert!(first["client_cost_percent"].as_f64().unwrap() > 0.0);
    assert_eq!(first["picks_total"], 1);
    assert_eq!(first["picks_since_heartbeat"], 1);
    assert_eq!(first["heartbeats"], 1);
    for age in ["heartbeat_age_seconds", "connection_age_seconds"] {
        let age = first[age].as_f64().unwrap();
        assert!((0.0..5.0).contains(&age), "{age}");
    }

    let second = &backends[1];
    assert_eq!(second["state"], "maintenance");
    assert_eq!(second["operator_state"], "maintenance");
    assert_eq!(second["reported"], serde_json::json!({"mem_percent": 120, "valid": false}));
}

#[tokio::test]
async fn an_unknown_service_is_a_json_404() {
    let state = state(None);
    for (method, uri) in
        [(Method::GET, "/v1/services/chat/backends"), (Method::POST, "/v1/services/chat/pick")]
    {
        let reply = call(&state, method, uri, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(reply.error(), "no service named \"chat\"");
    }
    let reply = get(&state, "/v1/services/no%20such/backends").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "a name no service can have");
    assert_eq!(reply.error(), "no service named \"no such\"");
}

#[tokio::test]
async fn an_http_pick_is_answered_and_counted_like_a_login() {
    let state = state(None);
    register(&state, 1, 50, "10.0.0.1", 7001);
    register(&state, 2, 10, "10.0.0.2", 7002);

    let reply = http_pick(&state, "/v1/services/default/pick").await;
    assert_eq!(reply.status, StatusCode::OK);
    let expected = json!({"service": "default", "id": 2, "address": "10.0.0.2:7002", "backend_id": "2",
        "endpoint": "10.0.0.2:7002"});
    assert_eq!(reply.json(), expected);
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store", "no cache answers a pick");
    let stats = state.dispatcher().stats();
    assert_eq!(stats.snapshot().logins_answered, 1);
    assert_eq!(stats.pick_latency.count(), 1);
    let picked = state.dispatcher().snapshot().into_iter().find(|b| b.id == BackendId(2)).unwrap();
    assert_eq!(picked.load.picks_total, 1, "the pick is accounted to the backend");
}

#[tokio::test]
async fn a_pick_with_no_backend_is_a_json_503_and_counted() {
    let state = state(None);
    let reply = http_pick(&state, "/v1/services/default/pick").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.error(), "no live backend in service \"default\"");
    assert_eq!(state.dispatcher().stats().snapshot().logins_no_backend, 1);

    register(&state, 1, 50, "10.0.0.1", 7001);
    state.dispatcher().set_state(BackendId(1), BackendState::Draining).unwrap();
    let reply = http_pick(&state, "/v1/services/default/pick").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "a draining backend is never picked");
}

#[tokio::test]
async fn actions_are_forbidden_when_no_token_is_configured() {
    let state = state(None);
    register(&state, 1, 50, "10.0.0.1", 7001);
    for action in ["drain", "undrain", "maintenance"] {
        let reply = post(&state, &format!("/v1/backends/1/{action}"), Some("anything")).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{action}");
        assert_eq!(reply.error(), "operator actions are disabled: no admin token is configured");
    }
    assert!(!state.actions_enabled());
    state.set_token(Some(String::new()));
    assert_eq!(post(&state, "/v1/backends/1/drain", Some("")).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn actions_without_the_right_token_are_unauthorized() {
    let state = state(Some(TOKEN));
    register(&state, 1, 50, "10.0.0.1", 7001);
    for bearer in [None, Some("wrong"), Some("correct horse battery stapl"), Some("")] {
        let reply = post(&state, "/v1/backends/1/drain", bearer).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bearer:?}");
        assert_eq!(reply.error(), "a valid bearer token is required");
        assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    let unknown = post(&state, "/v1/backends/99/drain", Some("wrong")).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED, "refused callers learn nothing about ids");
    assert_eq!(state.dispatcher().snapshot()[0].state, BackendState::Ready);
}

#[tokio::test]
async fn drain_undrain_and_maintenance_set_the_state() {
    let state = state(Some(TOKEN));
    register(&state, 1, 50, "10.0.0.1", 7001);
    register(&state, 2, 60, "10.0.0.2", 7002);
    let state_of =
        |id| state.dispatcher().snapshot().into_iter().find(|b| b.id == BackendId(id)).unwrap().state;

    let reply = post(&state, "/v1/backends/1/drain", Some(TOKEN)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"id": 1, "state": "draining", "operator_state": "draining"}));
    assert_eq!(state_of(1), BackendState::Draining);
    let picked = http_pick(&state, "/v1/services/default/pick").await.json();
    assert_eq!(picked["id"], 2, "the drained backend is passed over");

    let reply = post(&state, "/v1/backends/1/maintenance", Some(TOKEN)).await;
    assert_eq!(reply.json()["state"], "maintenance");
    assert_eq!(state_of(1), BackendState::Maintenance);

    let reply = post(&state, "/v1/backends/1/undrain", Some(TOKEN)).await;
    assert_eq!(reply.json()["state"], "ready");
    assert_eq!(state_of(1), BackendState::Ready);
}

#[tokio::test]
async fn actions_on_unknown_or_malformed_ids_are_json_errors() {
    let state = state(Some(TOKEN));
    let reply = post(&state, "/v1/backends/99/drain", Some(TOKEN)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error(), "no backend 99 is registered");
    let reply = post(&state, "/v1/backends/abc/drain", Some(TOKEN)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error(), "backend id \"abc\" is not a number");
}

#[tokio::test]
async fn the_token_can_be_changed_while_running() {
    let state = state(Some("old"));
    register(&state, 1, 50, "10.0.0.1", 7001);
    let served = state.clone();
    state.set_token(Some("new".into()));
    assert_eq!(post(&served, "/v1/backends/1/drain", Some("old")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(post(&served, "/v1/backends/1/drain", Some("new")).await.status, StatusCode::OK);
    state.set_token(None);
    assert_eq!(post(&served, "/v1/backends/1/undrain", Some("new")).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_json_errors() {
    let state = state(Some(TOKEN));
    let reply = get(&state, "/v2/nothing").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error(), "no such endpoint");
    let reply = get(&state, "/v1/backends/1/drain").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.error(), "method not allowed");
}

/// Fills in an OpenAPI path template with values that exist.
fn concrete(path: &str) -> String {
    path.replace("{service}", "default").replace("{id}", "1")
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let state = state(Some(TOKEN));
    register(&state, 1, 50, "10.0.0.1", 7001);
    let reply = get(&state, "/v1/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type, "application/json");
    let document = reply.json();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));

    let mut documented = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    for (method, path) in &documented {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let reply = call(&state, method.clone(), &concrete(path), Some(TOKEN)).await;
        let unrouted = reply.status == StatusCode::NOT_FOUND && reply.text.contains("no such endpoint");
        assert!(
            !unrouted && reply.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {}",
            reply.status
        );
    }
    let mut routed: Vec<_> = endpoints().into_iter().map(|(m, p)| (m.to_string(), p.to_owned())).collect();
    routed.sort();
    documented.sort();
    assert_eq!(routed, documented, "every route is documented, and nothing else");
}

#[tokio::test]
async fn the_dashboard_and_its_assets_are_served_from_the_binary() {
    let state = state(None);
    let page = get(&state, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    assert!(page.text.contains("<html lang=\"en\">"));
    let policy = page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"), "{policy}");
    for (uri, content_type) in
        [("/assets/dashboard.js", "text/javascript"), ("/assets/dashboard.css", "text/css")]
    {
        let asset = get(&state, uri).await;
        assert_eq!(asset.status, StatusCode::OK, "{uri}");
        assert!(asset.content_type.starts_with(content_type), "{uri}: {}", asset.content_type);
        assert!(page.text.contains(&uri[1..]), "the page links {uri}");
    }
    for text in [page.text, get(&state, "/assets/dashboard.css").await.text] {
        assert!(!text.contains("http://") && !text.contains("https://"), "nothing is fetched from elsewhere");
    }
}

/// `name{labels} value` lines of an OpenMetrics scrape, keyed by `name{labels}`.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("series and value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

#[tokio::test]
async fn metrics_follow_real_tcp_traffic() {
    let _serial = loadwise_testkit::shared_access().await;
    let server = TestServer::start().await;
    let state = AdminState::new(server.dispatcher.clone(), server.wire.clone(), AdminConfig::default());

    let _first = server.register(30, "10.0.0.1", 7001).await;
    let mut second = server.register(200, "10.0.0.2", 7002).await;
    let mut client = server.connect().await;
    for _ in 0..3 {
        login(&mut client).await;
    }
    send(&mut client, &login_stale()).await;
    loadwise_testkit::read_reply(&mut client).await;
    http_pick(&state, "/v1/services/default/pick").await;
    send(&mut second, &heartbeat(50, "10.0.0.2", 7002)).await;
    drop(second);
    server.wait_for_stat("second backend gone", |s| s.evicted_disconnected, |n| n == 1).await;
    let mut bad = server.connect().await;
    send(&mut bad, &[1, 0, 0, 0]).await;
    server.wait_for_wire("malformed frame", |s| s.protocol_errors, |n| n == 1).await;

    let reply = get(&state, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.content_type.starts_with("application/openmetrics-text"), "{}", reply.content_type);
    assert!(reply.text.ends_with("# EOF\n"));
    let metrics = parse_metrics(&reply.text);
    let value = |series: &str| *metrics.get(series).unwrap_or_else(|| panic!("{series} in\n{}", reply.text));
    assert_eq!(value(r#"loadwise_picks_total{service="default",result="answered"}"#), 4.0);
    assert_eq!(value(r#"loadwise_picks_total{service="default",result="clock_skew"}"#), 1.0);
    assert_eq!(value(r#"loadwise_picks_total{service="default",result="no_backend"}"#), 0.0);
    // A login refused for its timestamp never reaches a pick, so it is not timed.
    assert_eq!(value("loadwise_pick_duration_seconds_count"), 4.0);
    assert_eq!(value(r#"loadwise_pick_duration_seconds_bucket{le="+Inf"}"#), 4.0);
    assert!(value("loadwise_pick_duration_seconds_sum") > 0.0);
    assert_eq!(value("loadwise_heartbeats_total"), 3.0);
    assert_eq!(value("loadwise_heartbeats_refused_total"), 0.0);
    assert_eq!(value("loadwise_heartbeats_not_allowed_total"), 0.0);
    assert_eq!(value("loadwise_invalid_load_reports_total"), 1.0);
    assert_eq!(value(r#"loadwise_evictions_total{reason="disconnected"}"#), 1.0);
    assert_eq!(value(r#"loadwise_evictions_total{reason="expired"}"#), 0.0);
    assert_eq!(value(r#"loadwise_backends{service="default",state="ready"}"#), 1.0);
    assert_eq!(value(r#"loadwise_backends{service="default",state="draining"}"#), 0.0);
    assert_eq!(value(r#"loadwise_connections_total{result="accepted"}"#), 4.0);
    assert_eq!(value(r#"loadwise_connections_total{result="refused"}"#), 0.0);
    assert!(value("loadwise_connections_open") >= 2.0);
    assert_eq!(value(r#"loadwise_protocol_errors_total{kind="malformed"}"#), 1.0);
    assert_eq!(value(r#"loadwise_protocol_errors_total{kind="unknown_command"}"#), 0.0);
    server.stop().await;
}

/// The id the test's v2 backend chose: above 2^53, where JSON numbers lose digits.
const V2_BACKEND_ID: u64 = 0xfeed_face_cafe_beef;

/// A v2 heartbeat frame of the test's v2 backend, of service `search`, reporting `state`.
fn v2_heartbeat(state: v2::State) -> Vec<u8> {
    let metrics = vec![Metric { name: MetricName::new("queue").unwrap(), value: 2.0 }];
    let heartbeat = loadwise_testkit::search_heartbeat(V2_BACKEND_ID, state, metrics);
    Message::Heartbeat(heartbeat).encode().expect("a valid heartbeat")
}

/// Registers the test's v2 backend with one raw heartbeat; returns its connection and
/// the dispatcher's id of it.
async fn register_v2(server: &TestServer) -> (TcpStream, BackendId) {
    let mut stream = server.connect().await;
    send(&mut stream, &v2_heartbeat(v2::State::Ready)).await;
    let in_search = || server.dispatcher.snapshot().into_iter().find(|b| b.service.as_str() == "search");
    wait_until("the v2 backend registered", || in_search().is_some()).await;
    (stream, in_search().unwrap().id)
}

#[tokio::test]
async fn a_v2_backend_of_a_second_service_is_listed_picked_and_drained() {
    let _serial = loadwise_testkit::shared_access().await;
    let server = TestServer::start().await;
    let state = AdminState::new(
        server.dispatcher.clone(),
        server.wire.clone(),
        AdminConfig { token: Some(TOKEN.into()), ..AdminConfig::default() },
    );
    let _legacy = server.register(30, "10.0.0.1", 7001).await;
    let (mut backend, id) = register_v2(&server).await;
    let endpoint = "[2001:db8::7]:9000";

    let services = get(&state, "/v1/services").await.json()["services"].clone();
    let names: Vec<_> = services.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "search"]);
    assert_eq!((services[0]["default"].clone(), services[0]["backends"].clone()), (json!(true), json!(1)));
    let search = &services[1];
    assert_eq!(search["default"], false);
    assert_eq!(search["scoring"], "memory");
    assert_eq!((search["backends"].clone(), search["ready"].clone()), (json!(1), json!(1)));

    let listed = get(&state, "/v1/services/search/backends").await;
    assert_eq!(listed.status, StatusCode::OK);
    let body = listed.json();
    assert_eq!(body["service"], "search");
    let backends = body["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 1, "only the backends of the service: {backends:?}");
    let view = &backends[0];
    assert_eq!(view["id"], id.0, "the dispatcher's id, which the actions name");
    assert_eq!(view["protocol"], "v2");
    assert_eq!(view["address"], endpoint);
    assert_eq!(view["state"], "ready");
    assert_eq!(view["operator_state"], "ready");
    let expected = json!({
        "backend_id": V2_BACKEND_ID.to_string(), "endpoint": endpoint, "memory_percent": 25.0,
        "cpu_percent": 50.5, "connections": 3, "weight": 200, "reported_state": "ready",
        "metrics": {"queue": 2.0}, "score": 25.0,
    });
    assert_eq!(view["v2"], expected);
    let default = get(&state, "/v1/services/default/backends").await.json();
    assert_eq!(
        default["backends"].as_array().unwrap().len(),
        1,
        "the v2 backend is not in the default service"
    );

    let pick = http_pick(&state, "/v1/services/search/pick").await;
    assert_eq!(pick.status, StatusCode::OK);
    let expected = json!({"service": "search", "id": id.0, "address": endpoint,
        "backend_id": V2_BACKEND_ID.to_string(), "endpoint": endpoint});
    assert_eq!(pick.json(), expected);
    let picked = server.dispatcher.snapshot().into_iter().find(|b| b.id == id).unwrap();
    assert_eq!(picked.load.picks_total, 1, "the pick is accounted to the backend");

    let drained = post(&state, &format!("/v1/backends/{}/drain", id.0), Some(TOKEN)).await;
    assert_eq!(drained.status, StatusCode::OK);
    assert_eq!(drained.json(), json!({"id": id.0, "state": "draining", "operator_state": "draining"}));
    let refused = http_pick(&state, "/v1/services/search/pick").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error(), "no live backend in service \"search\"");
    let view = &get(&state, "/v1/services/search/backends").await.json()["backends"][0];
    assert_eq!(
        (view["state"].clone(), view["operator_state"].clone()),
        (json!("draining"), json!("draining"))
    );
    assert_eq!(view["v2"]["reported_state"], "ready");

    // The backend now reports maintenance itself: lifting the hold does not bring it back.
    send(&mut backend, &v2_heartbeat(v2::State::Maintenance)).await;
    wait_until("the maintenance report applied", || {
        server.dispatcher.snapshot().iter().any(|b| b.id == id && b.reported == BackendState::Maintenance)
    })
    .await;
    let undrained = post(&state, &format!("/v1/backends/{}/undrain", id.0), Some(TOKEN)).await;
    assert_eq!(undrained.json(), json!({"id": id.0, "state": "maintenance", "operator_state": "ready"}));
    server.stop().await;
}

#[tokio::test]
async fn metrics_label_every_service_and_count_v2_registrations_and_refusals() {
    let _serial = loadwise_testkit::shared_access().await;
    let server = TestServer::start().await;
    let state = AdminState::new(server.dispatcher.clone(), server.wire.clone(), AdminConfig::default());
    let (_backend, id) = register_v2(&server).await;
    server.dispatcher.set_state(id, BackendState::Draining).unwrap();

    // Without a secret a Register needs no proof, only the Challenge a Hello asks for.
    let search = ServiceName::new("search").unwrap();
    let register =
        |backend_id| Message::Register(v2::Register { backend_id, mac: [0; 32], service: search.clone() });
    let mut registering = server.connect().await;
    send(&mut registering, &Message::Hello(v2::Hello).encode().unwrap()).await;
    send(&mut registering, &register(7).encode().unwrap()).await;
    server.wait_for_wire("a registration", |s| s.v2_registrations, |n| n == 1).await;
    let mut hasty = server.connect().await;
    send(&mut hasty, &register(8).encode().unwrap()).await;
    let no_challenge = |s: &loadwise_server::stats::WireSnapshot| s.v2_refusals_with(ErrorCode::NO_CHALLENGE);
    server.wait_for_wire("a refusal", no_challenge, |n| n == 1).await;

    let reply = get(&state, "/metrics").await;
    let metrics = parse_metrics(&reply.text);
    let value = |series: &str| *metrics.get(series).unwrap_or_else(|| panic!("{series} in\n{}", reply.text));
    assert_eq!(value(r#"loadwise_backends{service="search",state="draining"}"#), 1.0);
    assert_eq!(value(r#"loadwise_backends{service="search",state="ready"}"#), 0.0);
    assert_eq!(
        value(r#"loadwise_backends{service="default",state="ready"}"#),
        0.0,
        "the default is always listed"
    );
    assert_eq!(value("loadwise_v2_registrations_total"), 1.0);
    assert_eq!(value(r#"loadwise_v2_refusals_total{code="no_challenge"}"#), 1.0);
    assert_eq!(value(r#"loadwise_v2_refusals_total{code="authentication_failed"}"#), 0.0);
    assert_eq!(value(r#"loadwise_v2_refusals_total{code="other"}"#), 0.0);
    let codes = metrics.keys().filter(|series| series.starts_with("loadwise_v2_refusals_total{")).count();
    assert_eq!(codes, ErrorCode::ALL.len() + 1, "one series per code, and other");
    server.stop().await;
}

#[tokio::test]
async fn latency_buckets_are_cumulative_and_end_at_the_count() {
    let state = state(None);
    register(&state, 1, 50, "10.0.0.1", 7001);
    for _ in 0..10 {
        http_pick(&state, "/v1/services/default/pick").await;
    }
    let metrics = parse_metrics(&get(&state, "/metrics").await.text);
    let buckets: Vec<f64> = metrics
        .iter()
        .filter(|(series, _)| series.starts_with("loadwise_pick_duration_seconds_bucket"))
        .map(|(_, value)| *value)
        .collect();
    assert_eq!(buckets.len(), 14);
    assert!(buckets.iter().all(|&count| count <= 10.0));
    assert_eq!(metrics[r#"loadwise_pick_duration_seconds_bucket{le="+Inf"}"#], 10.0);
}

/// Sends one HTTP/1.1 request over a real socket and returns the whole response.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = within(tokio::net::TcpStream::connect(addr)).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    within(stream.write_all(request.as_bytes())).await.unwrap();
    let mut response = String::new();
    within(stream.read_to_string(&mut response)).await.unwrap();
    response
}

#[tokio::test]
async fn the_server_serves_on_a_socket_and_stops_on_shutdown() {
    let _serial = loadwise_testkit::shared_access().await;
    let config = AdminConfig { token: Some(TOKEN.into()), ..AdminConfig::default() };
    let server = AdminServer::bind("127.0.0.1:0".parse().unwrap(), config, dispatcher(), Arc::default())
        .await
        .unwrap();
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    assert!(server.state().actions_enabled());

    let taken = AdminServer::bind(addr, AdminConfig::default(), dispatcher(), Arc::default()).await;
    let Err(AdminError::Bind { addr: refused, .. }) = taken else { panic!("a taken port is refused") };
    assert_eq!(refused, addr);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let response = http_get(addr, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");

    stop.send(()).unwrap();
    within(task).await.expect("the server stops without panicking");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the port is closed after shutdown");
}

#[tokio::test]
async fn a_drain_by_the_operator_is_not_undone_by_heartbeats_of_the_same_address() {
    let server = TestServer::start().await;
    let state = AdminState::new(
        server.dispatcher.clone(),
        server.wire.clone(),
        AdminConfig { token: Some(TOKEN.to_owned()), ..AdminConfig::default() },
    );
    let first = server.register(10, "10.0.0.1", 7001).await;
    let id = server.dispatcher.snapshot()[0].id.0;
    let reply = post(&state, &format!("/v1/backends/{id}/drain"), Some(TOKEN)).await;
    assert_eq!(reply.status, StatusCode::OK);
    // The backend reconnects, and allowed peers report its address 50 times.
    drop(first);
    let mut others = Vec::new();
    for _ in 0..50 {
        let mut stream = server.connect().await;
        send(&mut stream, &heartbeat(0, "10.0.0.1", 7001)).await;
        others.push(stream);
    }
    let heartbeats = || server.dispatcher.stats().snapshot().heartbeats;
    wait_until("the 50 heartbeats applied", || heartbeats() == 51).await;
    let mut client = server.connect().await;
    let mut answered = 0;
    for _ in 0..50 {
        let reply = login(&mut client).await;
        answered += usize::from(reply[2] == loadwise_protocol::cmd::LOGIN as u8);
    }
    assert_eq!(answered, 0, "every client is refused: the address stays drained");
    // The address names one backend, whichever connection carries it, and it is held.
    let states: Vec<_> = server.dispatcher.snapshot().iter().map(|b| b.held).collect();
    assert_eq!(states, [BackendState::Draining]);
}

#[tokio::test]
async fn backend_lists_come_a_page_at_a_time_filtered_by_state() {
    let state = state(None);
    for id in 1..=5 {
        register(&state, id, 10, &format!("10.0.0.{id}"), 7000);
    }
    state.dispatcher().set_state(BackendId(3), BackendState::Draining).unwrap();
    let ids = |reply: &Reply| -> Vec<u64> {
        reply.json()["backends"].as_array().unwrap().iter().map(|b| b["id"].as_u64().unwrap()).collect()
    };
    let first = get(&state, "/v1/services/default/backends?limit=2").await;
    assert_eq!((ids(&first), first.json()["next_after"].clone()), (vec![1, 2], serde_json::json!(2)));
    let second = get(&state, "/v1/services/default/backends?limit=2&after=2").await;
    assert_eq!((ids(&second), second.json()["next_after"].clone()), (vec![3, 4], serde_json::json!(4)));
    let last = get(&state, "/v1/services/default/backends?limit=2&after=4").await;
    assert_eq!((ids(&last), last.json()["next_after"].clone()), (vec![5], serde_json::Value::Null));
    let ready = get(&state, "/v1/services/default/backends?state=ready&limit=3").await;
    assert_eq!(ids(&ready), vec![1, 2, 4]);
    let all = get(&state, "/v1/services/default/backends").await;
    assert_eq!((ids(&all).len(), all.json()["next_after"].clone()), (5, serde_json::Value::Null));
    for (query, needle) in
        [("limit=0", "limit"), ("limit=5001", "limit"), ("after=x", "after"), ("state=up", "state")]
    {
        let reply = get(&state, &format!("/v1/services/default/backends?{query}")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(reply.error().starts_with(needle), "{query}: {}", reply.error());
    }
}

#[tokio::test]
async fn a_pick_by_get_is_refused_with_allow_post() {
    let state = state(None);
    register(&state, 1, 10, "10.0.0.1", 7000);
    let reply = get(&state, "/v1/services/default/pick").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers[header::ALLOW], "POST");
    assert_eq!(state.dispatcher().snapshot()[0].load.picks_total, 0, "a GET picks nothing");
}

#[tokio::test]
async fn the_host_header_must_name_an_allowed_host_except_for_probes() {
    let config = AdminConfig { allowed_hosts: vec!["admin.example".into()], ..AdminConfig::default() };
    let state = AdminState::new(
        dispatcher(),
        Arc::default(),
        config.with_default_hosts("127.0.0.1:8524".parse().unwrap()),
    );
    let with_host = |path: &'static str, host: &'static str| {
        let request = Request::get(path).header(header::HOST, host).body(Body::empty()).unwrap();
        router(state.clone()).oneshot(request)
    };
    for host in ["127.0.0.1:8524", "localhost", "[::1]:8524", "ADMIN.example:80"] {
        assert_eq!(with_host("/v1/services", host).await.unwrap().status(), StatusCode::OK, "{host}");
    }
    let refused = with_host("/v1/services", "rebound.example").await.unwrap();
    assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(with_host("/healthz", "rebound.example").await.unwrap().status(), StatusCode::OK);
    assert_eq!(with_host("/readyz", "rebound.example:8524").await.unwrap().status(), StatusCode::OK);
    // An address is no rebinding: scrapers name the pod's.
    assert_eq!(with_host("/metrics", "10.1.2.3:8524").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let state = state(None);
    let request = Request::post("/v1/services/default/pick")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(vec![b' '; 65 * 1024]))
        .unwrap();
    let response = router(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// An HTTP pick of the default service with a JSON body: status and body.
async fn keyed_http_pick(state: &AdminState, body: &str) -> (StatusCode, serde_json::Value) {
    let request = Request::post("/v1/services/default/pick")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_default())
}

#[tokio::test]
async fn an_http_pick_with_a_key_in_its_body_is_sticky() {
    let state = state(None);
    for id in 1..=4 {
        register(&state, id, 10, &format!("10.0.0.{id}"), 7000);
    }
    let (status, first) = keyed_http_pick(&state, r#"{"key": "player-42"}"#).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    for _ in 0..5 {
        let (_, again) = keyed_http_pick(&state, r#"{"key": "player-42"}"#).await;
        assert_eq!(again["address"], first["address"], "the same key, the same backend");
    }
    let too_long = format!(r#"{{"key": "{}"}}"#, "k".repeat(65));
    let (status, refused) = keyed_http_pick(&state, &too_long).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(refused["error"].as_str().unwrap().starts_with("key: 65 bytes"), "{refused}");
    let (status, _) = keyed_http_pick(&state, r#"{"key": 42}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a key is a string");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_while_another_is_served() {
    // Lists of thousands of backends, asked for at once: far more than the socket
    // buffers of both ends hold, with a small receive buffer at the client's.
    const BACKENDS: u64 = 5_000;
    const LISTS: usize = 6;
    let _serial = loadwise_testkit::shared_access().await;
    let dispatcher = dispatcher();
    let now = Instant::now();
    for id in 0..BACKENDS {
        let ip = IpField::from_text(&format!("10.0.{}.{}", id / 250, id % 250 + 1)).unwrap();
        let report = legacy_report(&Heartbeat { mem: 40, ip, port: 7000 }).unwrap();
        dispatcher.heartbeat(ConnectionId(id), &report, now).unwrap();
    }
    let mut config = AdminConfig::default();
    config.limits.write_timeout = std::time::Duration::from_millis(300);
    let server =
        AdminServer::bind("127.0.0.1:0".parse().unwrap(), config, dispatcher, Arc::default()).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = within(socket.connect(addr)).await.unwrap();
    let list = "/v1/services/default/backends?limit=5000";
    let request = format!("GET {list} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    within(stalled.write_all(request.repeat(LISTS).as_bytes())).await.unwrap();

    // Meanwhile another client is served, and sees the stalled one given up.
    let end = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let response = http_get(addr, "/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        if response.lines().any(|line| line == "loadwise_admin_write_timeouts_total 1") {
            break;
        }
        assert!(Instant::now() < end, "no write timeout counted:\n{response}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // What the stalled client finds is what the buffers held, then the end.
    let mut taken = 0;
    let mut buf = vec![0; 64 * 1024];
    loop {
        match within(stalled.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(read) => taken += read,
        }
    }
    let whole = http_get(addr, list).await;
    assert!(whole.starts_with("HTTP/1.1 200 OK"), "{}", &whole[..200.min(whole.len())]);
    let asked = LISTS * whole.len();
    assert!(taken < asked, "all {asked} bytes reached the stalled client");

    stop.send(()).unwrap();
    within(task).await.unwrap();
}

#[test]
fn a_reload_changes_the_timeouts_and_keeps_the_sizes() {
    let state = AdminState::new(dispatcher(), Arc::default(), AdminConfig::default());
    let second = std::time::Duration::from_secs(1);
    let next = loadwise_server::admin::AdminLimits {
        max_connections: 1,
        header_read_timeout: second,
        request_timeout: 2 * second,
        write_timeout: 3 * second,
        expensive_reads: 9,
        ..state.limits()
    };
    state.set_timeouts(&next);
    let limits = state.limits();
    assert_eq!(
        (limits.header_read_timeout, limits.request_timeout, limits.write_timeout),
        (second, 2 * second, 3 * second)
    );
    let defaults = loadwise_server::admin::AdminLimits::default();
    assert_eq!(
        (limits.max_connections, limits.expensive_reads),
        (defaults.max_connections, defaults.expensive_reads)
    );
}

//! `loadwise pick --service` against a scripted v2 dispatcher on loopback: the address
//! and the ticket on stdout, as JSON on request, and a declined pick as a refusal.

mod process;

use loadwise_testkit::{Scripted, picked_v6, unknown_service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_service_prints_the_address_and_the_ticket() {
    let text = Scripted::start(picked_v6, 1).await;
    let server = text.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        process::run_to_end(&["pick", "--server", &server, "--service", "game"], &[])
    })
    .await
    .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, "[2001:db8::9]:7009\nabcd\n");

    let json = Scripted::start(picked_v6, 1).await;
    let server = json.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        process::run_to_end(&["pick", "--server", &server, "--service", "game", "--json"], &[])
    })
    .await
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(value["backend"], "[2001:db8::9]:7009");
    assert_eq!((value["backend_id"].as_str(), value["ticket"].as_str()), (Some("4660"), Some("abcd")));

    let refusing = Scripted::start(unknown_service, 1).await;
    let server = refusing.addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        process::run_to_end(&["pick", "--server", &server, "--service", "game"], &[])
    })
    .await
    .unwrap();
    assert_eq!(out.code, Some(3), "a declined pick is a refusal: {out:?}");
    assert!(out.stderr.contains("unknown service"), "{out:?}");
}

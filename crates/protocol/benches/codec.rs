//! Criterion benchmarks of the legacy codec: decoding request streams, encoding replies.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use loadwise_protocol::codec::DispatcherCodec;
use loadwise_protocol::{Heartbeat, IpField, LoginReply, LoginRequest, parse_request};
use tokio_util::codec::{Decoder, Encoder};

/// Frames per decoded buffer: what one read of a busy pipelined connection holds.
const FRAMES: usize = 64;

fn login() -> [u8; LoginRequest::LEN] {
    LoginRequest { timestamp: 1_700_000_000 }.encode()
}

fn heartbeat() -> [u8; Heartbeat::LEN] {
    Heartbeat { mem: 42, ip: IpField::from_text("10.0.0.2").unwrap(), port: 7000 }.encode()
}

/// Decodes every frame of `stream` with a fresh codec and buffer.
fn decode_all(c: &mut Criterion, name: &str, stream: &[u8]) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function(name, |b| {
        b.iter_batched_ref(
            || BytesMut::from(stream),
            |buf| {
                let mut codec = DispatcherCodec::default();
                while let Some(item) = codec.decode(buf).unwrap() {
                    black_box(item);
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    decode_all(c, "64 logins", &login().repeat(FRAMES));
    decode_all(c, "64 heartbeats", &heartbeat().repeat(FRAMES));
    let mixed: Vec<u8> =
        (0..FRAMES / 2).flat_map(|_| [heartbeat().to_vec(), login().to_vec()].concat()).collect();
    decode_all(c, "32 heartbeat+login pairs", &mixed);
}

fn parse(c: &mut Criterion) {
    let login = login();
    let heartbeat = heartbeat();
    c.bench_function("parse_request/login", |b| b.iter(|| parse_request(black_box(&login), u16::MAX)));
    c.bench_function("parse_request/heartbeat", |b| {
        b.iter(|| parse_request(black_box(&heartbeat), u16::MAX))
    });
}

fn encode(c: &mut Criterion) {
    let reply = LoginReply::Backend { ip: IpField::from_text("10.0.0.2").unwrap(), port: 7000 };
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function("64 replies", |b| {
        let mut out = BytesMut::with_capacity(FRAMES * LoginReply::LEN);
        let mut codec = DispatcherCodec::default();
        b.iter(|| {
            out.clear();
            for _ in 0..FRAMES {
                codec.encode(black_box(reply), &mut out).unwrap();
            }
            black_box(&out);
        })
    });
    group.finish();
}

criterion_group!(benches, decode, parse, encode);
criterion_main!(benches);

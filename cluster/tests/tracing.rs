//! One checkout is one trace: with an OTLP receiver in the test (a gRPC
//! collector), a checkout through the gateway yields spans sharing one trace
//! id from the gateway and from the order, payment and stock coordinators
//! and nodes; in it the saga's charge and take of stock run at once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cart_common::spec::CrossService;
use cart_common::Service;
use common::{cluster, eventually, Client};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// One span as received.
#[derive(Clone, Debug)]
struct Seen {
    service: String,
    name: String,
    /// Its `step` attribute, if any (the saga's steps).
    step: Option<String>,
    start_ns: u64,
    end_ns: u64,
}

/// Trace id (hex) → every span received in it.
type Traces = BTreeMap<String, Vec<Seen>>;

fn string(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<String> {
    match v?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        other => Some(format!("{other:?}")),
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Traces>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| string(kv.value.as_ref()))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    let step = span
                        .attributes
                        .iter()
                        .find(|kv| kv.key == "step")
                        .and_then(|kv| string(kv.value.as_ref()));
                    spans.entry(trace).or_default().push(Seen {
                        service: service.clone(),
                        name: span.name.clone(),
                        step,
                        start_ns: span.start_time_unix_nano,
                        end_ns: span.end_time_unix_nano,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_checkout_is_one_trace_across_every_service_with_charge_and_take_at_once() {
    let collector = Collector::default();
    let addr = free_addr();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve(addr);
    tokio::spawn(server);
    // The cluster's processes inherit these (each test runs in its own
    // process under nextest).
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "200");

    // Through the coordinators, so every service's coordinator is on the path.
    let cluster = cluster(&Service::ALL, |spec| {
        spec.cluster.cross_service = CrossService::Coordinator;
    });
    let client = Client::gateway(&cluster);
    let order = client.one_item_order(2).await;
    let checkout = "POST /orders/checkout/{order_id}";
    assert!(client.post(&format!("/orders/checkout/{order}")).await.ok());

    let want: BTreeSet<&str> = [
        "cart-gateway",
        "cart-order-coordinator",
        "cart-order-node",
        "cart-payment-coordinator",
        "cart-payment-node",
        "cart-stock-coordinator",
        "cart-stock-node",
    ]
    .into();
    let trace = eventually(
        "one trace through every service, with the saga's spans",
        Duration::from_secs(20),
        || async {
            let spans = collector.spans.lock().unwrap();
            // The trace of the order coordinator's checkout request.
            let (_, trace) = spans.iter().find(|(_, s)| {
                s.iter()
                    .any(|s| s.service == "cart-order-coordinator" && s.name == checkout)
            })?;
            let services: BTreeSet<&str> = trace.iter().map(|s| s.service.as_str()).collect();
            let names: BTreeSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
            // Spans arrive in batches per process: wait for the saga's too.
            let complete =
                want.is_subset(&services) && SAGA_SPANS.iter().all(|s| names.contains(s));
            complete.then(|| trace.clone())
        },
    )
    .await;

    // The order leader's charge and take of stock overlap in time.
    let step = |which: &str| {
        trace
            .iter()
            .find(|s| s.name == "saga.step" && s.step.as_deref() == Some(which))
            .unwrap_or_else(|| panic!("no {which} step in {trace:#?}"))
            .clone()
    };
    let (charge, take) = (step("charge"), step("take_stock"));
    assert!(
        charge.start_ns < take.end_ns && take.start_ns < charge.end_ns,
        "charge and take of stock ran one after the other: {charge:?} {take:?}"
    );
}

/// The spans of the saga, its steps and the Raft writes.
const SAGA_SPANS: [&str; 3] = ["saga", "saga.step", "raft.write"];

//! The testkit's `MotoServer`: starts on a free loopback port, answers EC2,
//! and is gone after drop, also when the test panics; and its `subnet_in`.

use conductor_testkit::moto::MotoServer;

/// Whether any process of group `pgid` is alive.
fn group_alive(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(-(pgid as i32), 0) == 0 }
}

/// An `Ec2Backend` on `moto`, in us-east-1.
async fn backend(moto: &MotoServer) -> conductor_aws::ec2::Ec2Backend {
    conductor_aws::ec2::Ec2Backend::builder()
        .region("us-east-1")
        .endpoint_url(moto.endpoint())
        .static_credentials(
            conductor_testkit::moto::ACCESS_KEY_ID,
            conductor_testkit::moto::SECRET_ACCESS_KEY,
        )
        .build()
        .await
}

fn refuses(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

#[tokio::test]
async fn moto_answers_ec2_and_stops_on_drop() {
    let moto = MotoServer::start();
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    assert!(moto.answers());
    let ec2 = backend(&moto).await;
    let regions = ec2
        .client(&conductor_core::Region::new("us-east-1").unwrap())
        .describe_regions()
        .send()
        .await
        .unwrap();
    assert!(!regions.regions().is_empty(), "moto's EC2 answers");
    let (port, pid) = (moto.port(), moto.pid());
    drop(moto);
    assert!(refuses(port), "port {port} closed after drop");
    assert!(!group_alive(pid), "process group {pid} gone after drop");
}

#[test]
fn moto_stops_when_the_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::panic::catch_unwind(move || {
        let moto = MotoServer::start();
        tx.send((moto.port(), moto.pid())).unwrap();
        panic!("a failing test");
    });
    assert!(r.is_err());
    let (port, pid) = rx.recv().unwrap();
    assert!(refuses(port), "port {port} closed after the panic");
    assert!(
        !group_alive(pid),
        "process group {pid} gone after the panic"
    );
}

#[test]
fn two_servers_get_different_ports() {
    let (a, b) = (MotoServer::start(), MotoServer::start());
    assert_ne!(a.port(), b.port());
    assert!(a.answers() && b.answers());
}

#[tokio::test]
async fn subnet_in_makes_a_subnet_of_a_new_vpc_in_the_zone() {
    let moto = MotoServer::start();
    let zone = conductor_testkit::fixtures::zone();
    let net = conductor_testkit::moto::subnet_in(&moto.endpoint(), &zone);
    let ec2 = backend(&moto).await;
    let out = ec2
        .client(&zone.region())
        .describe_subnets()
        .subnet_ids(&net.subnet_id)
        .send()
        .await
        .unwrap();
    let subnet = &out.subnets()[0];
    assert_eq!(subnet.vpc_id(), Some(net.vpc_id.as_str()));
    assert_eq!(subnet.availability_zone(), Some(zone.as_str()));
    assert_eq!(subnet.cidr_block(), Some("10.0.1.0/24"));
}

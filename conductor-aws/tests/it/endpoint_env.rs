//! `Ec2Backend` honours `AWS_ENDPOINT_URL` when no endpoint is given. The
//! only test of this binary: it sets process-wide variables before any other
//! thread (the runtime's included) exists.

use conductor_aws::ec2::Ec2Backend;
use conductor_core::Region;
use conductor_core::{CloudBackend, Scope};
use conductor_testkit::moto::{MotoServer, ACCESS_KEY_ID, SECRET_ACCESS_KEY};

#[test]
fn aws_endpoint_url_is_honoured() {
    let moto = MotoServer::start();
    std::env::set_var("AWS_ENDPOINT_URL", moto.endpoint());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ec2 = Ec2Backend::builder()
            .region("us-east-1")
            .static_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
            .max_attempts(1)
            .build()
            .await;
        assert_eq!(ec2.endpoint_url(), Some(moto.endpoint().as_str()));
        let inv = ec2
            .inventory(&Scope::all(Region::new("us-east-1").unwrap()))
            .await
            .expect("moto answers through AWS_ENDPOINT_URL");
        assert!(inv.instances.is_empty());
    });
}

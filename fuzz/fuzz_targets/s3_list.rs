//! Bytes → the answer to a ListObjectsV2 request → `kubestyle_s3::list` (what `download` and
//! `upload` do with a listed prefix): the SDK's XML parse of the page, then kubestyle's checks.
//! Whatever the server says, `list` returns keys below the prefix with sizes an object can
//! have, or an error with an exit code of the table; it never panics.
#![no_main]

use std::sync::{Mutex, OnceLock};

use kubestyle_manifest::ExitStatus;
use kubestyle_s3::aws_sdk_s3::Client;
use libfuzzer_sys::fuzz_target;

static BODY: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

fn client() -> &'static Client {
    static C: OnceLock<Client> = OnceLock::new();
    C.get_or_init(|| kubestyle_s3::canned::client(|_| (200, BODY.lock().unwrap().clone())))
}

fuzz_target!(|data: &[u8]| {
    *BODY.lock().unwrap() = data.to_vec();
    match runtime().block_on(kubestyle_s3::list(client(), "bkt", "photos/", 10_000)) {
        Ok(objects) => {
            for o in objects {
                assert!(o.key.starts_with("photos/"), "{:?}", o.key);
                assert!(o.size <= kubestyle_s3::MAX_OBJECT_SIZE, "{}", o.size);
            }
        }
        Err(e) => assert!(
            matches!(
                e.exit_status(),
                ExitStatus::Storage | ExitStatus::InputMissing | ExitStatus::InputInvalid
            ),
            "{e}"
        ),
    }
});

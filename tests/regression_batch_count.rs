//! Regression: an oversized put marked the batch by setting its count to `u32::MAX`; the
//! next put wrapped it, so the batch looked valid, `write` returned Ok, the data was lost
//! and the next open failed on a corrupt WAL record.

use minidb::engine::{Engine, Error, Options, WriteBatch, MAX_KEY_LEN};

#[test]
fn an_oversized_put_refuses_the_whole_batch_whatever_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Engine::open(dir.path(), Options::default()).expect("open");
    let mut b = WriteBatch::new();
    b.put(&vec![b'k'; MAX_KEY_LEN + 1], b"v");
    b.put(b"a", b"1").put(b"b", b"2");
    assert_eq!(b.len(), 3);
    assert!(matches!(db.write(b), Err(Error::InvalidArgument(_))));
    assert_eq!(db.get(b"a").expect("get"), None);
    db.put(b"c", b"3").expect("later writes work");
    db.close().expect("close");
    let db = Engine::open(dir.path(), Options::default()).expect("reopen");
    assert_eq!(db.get(b"c").expect("get").as_deref(), Some(&b"3"[..]));
    assert_eq!(db.get(b"a").expect("get"), None);
}

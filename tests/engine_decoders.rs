//! Every on-disk decoder (WAL record, block, table footer and index, manifest) on arbitrary
//! bytes and on damaged valid files: an error or a value, never a panic. The same entry
//! points are the fuzz targets in `fuzz/`.

use minidb::engine::fuzzing;
use proptest::prelude::*;

/// A small valid table to damage.
fn valid_table() -> Vec<u8> {
    use minidb::engine::storage::{SimFs, Storage};
    use minidb::engine::{Engine, Options};
    use std::sync::Arc;
    let fs = SimFs::new();
    let mut o = Options::default();
    o.storage = Arc::new(fs.clone());
    o.reserve_bytes = 0;
    o.block_size = 256;
    let db = Engine::open("/db", o).expect("open");
    for i in 0..40u32 {
        db.put(format!("key{i:03}").as_bytes(), &i.to_le_bytes().repeat(8))
            .expect("put");
    }
    db.delete(b"key007").expect("delete");
    db.flush().expect("flush");
    let sst = fs
        .list(std::path::Path::new("/db/sst"))
        .expect("list")
        .into_iter()
        .next()
        .expect("one table");
    fs.read_file(&std::path::Path::new("/db/sst").join(sst.name))
        .expect("read table")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::wal_segment(&data);
        let mut seg = b"MDBWAL01".to_vec();
        seg.extend_from_slice(&data);
        fuzzing::wal_segment(&seg);
        fuzzing::manifest_file(&data);
        fuzzing::table_footer(&data);
        fuzzing::block(&data);
        fuzzing::table_file(&data);
    }
}

#[test]
fn damaged_tables_never_panic() {
    let good = valid_table();
    fuzzing::table_file(&good);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..good.len() {
        let mut bad = good.clone();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        bad[i] ^= (rng as u8) | 1;
        fuzzing::table_file(&bad);
        fuzzing::table_file(&good[..i]);
    }
}

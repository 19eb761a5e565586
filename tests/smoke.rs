use regionkv::{Db, Error, NewAccount, Raw, Table, Unique};

const T: Table<Raw> = Table::new("t");

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::builder()
        .region("us")
        .region("eu")
        .open(dir.path())
        .unwrap();
    let a = db
        .create_account(NewAccount::new("a", "eu").allow("us"))
        .unwrap();
    let b = db.create_account(NewAccount::new("b", "us")).unwrap();
    let mut w = db.write(a).unwrap();
    w.insert(&T, b"k1", b"v1").unwrap();
    w.insert_unique(&T, b"k2", b"v2", &[Unique::new("email", "x@y")])
        .unwrap();
    w.commit().unwrap();
    let mut w = db.write(b).unwrap();
    w.insert_unique(&T, b"k9", b"v9", &[Unique::new("email", "x@y")])
        .unwrap();
    assert!(matches!(w.commit(), Err(Error::UniqueViolation { .. })));
    let r = db.read(a).unwrap();
    assert_eq!(&*r.get(&T, b"k1").unwrap().unwrap(), b"v1");
    let hit = db.find_unique(&T, "email", "x@y").unwrap().unwrap();
    assert_eq!(hit.account(), a);
    assert_eq!(&**hit.record(), b"v2");
    drop(r);
    drop(hit);
    db.close().unwrap();
    let db = Db::builder()
        .region("eu")
        .region("us")
        .open(dir.path())
        .unwrap();
    let hit = db.find_unique(&T, "email", "x@y").unwrap().unwrap();
    assert_eq!(hit.account(), a);
    let mut w = db.write(a).unwrap();
    w.remove(&T, b"k2").unwrap();
    w.commit().unwrap();
    assert!(!db.is_taken("email", "x@y").unwrap());
    let mut w = db.write(b).unwrap();
    w.insert_unique(&T, b"k9", b"v9", &[Unique::new("email", "x@y")])
        .unwrap();
    w.commit().unwrap();
    assert_eq!(
        db.find_unique(&T, "email", "x@y")
            .unwrap()
            .unwrap()
            .account(),
        b
    );
}

//! Data sets from `.npy` files (fixtures written by NumPy, see
//! `tests/data/npy/README.md`) and CSV, and the `DataLoader`'s batches.

use kiln::data::{CharCorpus, CsvOptions, DataLoader, Dataset, Split};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn npy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/npy")
        .join(name)
}

fn err(r: kiln::Result<Dataset>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn npy_arrays_of_each_dtype_load_as_numpy_wrote_them() {
    let d = Dataset::from_npy(&npy("x_f32.npy"), &npy("y_i64.npy")).unwrap();
    assert_eq!((d.len(), d.sample_shape()), (5, &[2, 3][..]));
    let want: Vec<f32> = (0..30).map(|v| (v as f32 - 7.5) / 4.0).collect();
    assert_eq!(d.samples(), &want[..]);
    assert_eq!(d.labels(), &[3, 0, 2, 2, 1]);
    let d = Dataset::from_npy(&npy("x_u8.npy"), &npy("y_i32.npy")).unwrap();
    assert_eq!(d.sample_shape(), &[3]);
    assert_eq!(&d.samples()[..3], &[0.0, 128.0, 255.0], "no scaling");
    assert_eq!(d.labels(), &[1, 0, 1, 0]);
    let d = Dataset::from_npy(&npy("x_f64.npy"), &npy("y_u8.npy")).unwrap();
    assert_eq!(d.samples(), &[0.5, -1.25, 1e-3, 2.0]);
    assert_eq!(d.labels(), &[7, 9]);
}

#[test]
fn bad_npy_files_are_errors_naming_the_file() {
    let e = err(Dataset::from_npy(&npy("x_fortran.npy"), &npy("y_3.npy")));
    assert!(e.contains("x_fortran.npy") && e.contains("Fortran"), "{e}");
    let e = err(Dataset::from_npy(
        &npy("x_truncated.npy"),
        &npy("y_i64.npy"),
    ));
    assert!(
        e.contains("x_truncated.npy") && e.contains("truncated"),
        "{e}"
    );
    let e = err(Dataset::from_npy(&npy("x_f64.npy"), &npy("y_f32.npy")));
    assert!(
        e.contains("y_f32.npy") && e.contains("must be integers"),
        "{e}"
    );
    let e = err(Dataset::from_npy(&npy("x_f32.npy"), &npy("y_3.npy")));
    assert!(e.contains("labels of shape [3] for 5 samples"), "{e}");
    let e = err(Dataset::from_npy(&npy("README.md"), &npy("y_3.npy")));
    assert!(
        e.contains("README.md") && e.contains("not a .npy file"),
        "{e}"
    );
    let e = err(Dataset::from_npy(&npy("missing.npy"), &npy("y_3.npy")));
    assert!(
        e.contains("missing.npy") && e.contains("cannot read"),
        "{e}"
    );
}

fn csv_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-csv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn csv_rows_load_with_the_label_in_any_column() {
    let p = csv_file("a.csv", "label,p0,p1,p2,p3\n3,0,0.5,1,-2\n1, 4 ,5,6,7\n");
    let d = Dataset::from_csv(&p, &CsvOptions::default()).unwrap();
    assert_eq!(
        (d.len(), d.sample_shape(), d.labels()),
        (2, &[4][..], &[3, 1][..])
    );
    assert_eq!(d.samples(), &[0.0, 0.5, 1.0, -2.0, 4.0, 5.0, 6.0, 7.0]);
    let d = d.with_sample_shape(&[1, 2, 2]).unwrap();
    assert_eq!(d.sample_shape(), &[1, 2, 2]);
    let p = csv_file("b.csv", "0.25;9;2\n1;8;0\n");
    let options = CsvOptions {
        header: false,
        label_column: 2,
        delimiter: b';',
    };
    let d = Dataset::from_csv(&p, &options).unwrap();
    assert_eq!(
        (d.samples(), d.labels()),
        (&[0.25, 9.0, 1.0, 8.0][..], &[2, 0][..])
    );
}

#[test]
fn bad_csv_files_are_errors_naming_row_and_column() {
    let o = CsvOptions::default();
    let e = err(Dataset::from_csv(&csv_file("empty.csv", "y,a\n"), &o));
    assert!(e.contains("empty.csv") && e.contains("no data rows"), "{e}");
    let e = err(Dataset::from_csv(&csv_file("c.csv", "y,a\n1,x\n"), &o));
    assert!(e.contains("row 2, column 1: `x` is not a number"), "{e}");
    let e = err(Dataset::from_csv(&csv_file("d.csv", "y,a\n1.5,2\n"), &o));
    assert!(
        e.contains("row 2, column 0: `1.5` is not an integer class label"),
        "{e}"
    );
    let e = err(Dataset::from_csv(
        &csv_file("e.csv", "y,a,b\n1,2,3\n0,1\n"),
        &o,
    ));
    assert!(e.contains("row 3 has 2 fields, the first row 3"), "{e}");
    let far = CsvOptions {
        label_column: 5,
        ..o
    };
    let e = err(Dataset::from_csv(&csv_file("f.csv", "y,a\n1,2\n"), &far));
    assert!(e.contains("no label column 5"), "{e}");
    let e = err(Dataset::from_csv(&csv_file("g.csv", "y,a\n1,2\n"), &o)
        .unwrap()
        .with_sample_shape(&[2]));
    assert!(e.contains("[1]") && e.contains("[2]"), "{e}");
}

fn numbered(n: usize) -> Arc<Dataset> {
    // sample i holds [i, -i], label i
    let samples = (0..n).flat_map(|i| [i as f32, -(i as f32)]).collect();
    Arc::new(Dataset::new(samples, (0..n as i64).collect(), &[2]).unwrap())
}

#[test]
fn a_data_loader_batches_every_sample_once_per_epoch() {
    let data = numbered(10);
    let loader = DataLoader::new(data.clone(), 4).unwrap();
    let batches: Vec<_> = loader.epoch(0).map(Result::unwrap).collect();
    assert_eq!(loader.len(), 3);
    let sizes: Vec<usize> = batches.iter().map(|b| b.y.numel()).collect();
    assert_eq!(sizes, [4, 4, 2], "a smaller last batch");
    assert_eq!(batches[2].x.shape(), &[2, 2]);
    assert_eq!(batches[2].y.data(), &[8, 9]);
    assert_eq!(batches[2].x.data(), &[8.0, -8.0, 9.0, -9.0]);
    let dropped = DataLoader::new(data.clone(), 4).unwrap().drop_last(true);
    assert_eq!(dropped.epoch(0).count(), 2);
    // shuffled: a permutation, the same for the same seed and epoch
    let shuffled = DataLoader::new(data, 3).unwrap().shuffle(7);
    let order = |epoch| -> Vec<i64> {
        shuffled
            .epoch(epoch)
            .flat_map(|b| b.unwrap().y.data().to_vec())
            .collect()
    };
    let (a, b, c) = (order(0), order(0), order(1));
    assert_eq!(a, b);
    assert_ne!(a, c, "a new order every epoch");
    assert_ne!(a, (0..10).collect::<Vec<i64>>());
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..10).collect::<Vec<i64>>());
    // every batch's samples belong to its labels
    for batch in shuffled.epoch(3) {
        let batch = batch.unwrap();
        for (row, &label) in batch.y.data().iter().enumerate() {
            assert_eq!(batch.x.data()[2 * row], label as f32);
        }
    }
    // stopping early leaves no thread blocked
    let mut it = shuffled.epoch(4);
    assert!(it.next().is_some());
    drop(it);
    let e = DataLoader::new(numbered(2), 0).unwrap_err().to_string();
    assert!(e.contains("batch_size must be at least 1"), "{e}");
}

#[test]
fn every_prefix_and_corruption_of_an_npy_file_is_an_error_not_a_panic() {
    let good = std::fs::read(npy("x_f32.npy")).unwrap();
    let dir = std::env::temp_dir().join(format!("kiln-npy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("x.npy");
    for cut in 0..good.len() {
        std::fs::write(&p, &good[..cut]).unwrap();
        assert!(
            Dataset::from_npy(&p, &npy("y_i64.npy")).is_err(),
            "prefix {cut}"
        );
    }
    // every header byte flipped, and junk after the data
    for i in 0..good.len().min(128) {
        let mut bad = good.clone();
        bad[i] ^= 0x5a;
        std::fs::write(&p, &bad).unwrap();
        let _ = Dataset::from_npy(&p, &npy("y_i64.npy"));
    }
    let mut long = good.clone();
    long.push(0);
    std::fs::write(&p, &long).unwrap();
    let e = err(Dataset::from_npy(&p, &npy("y_i64.npy")));
    assert!(e.contains("has more"), "{e}");
}

#[test]
fn a_char_corpus_has_sorted_ids_and_windows_whose_targets_are_the_next_character() {
    // "hello world" x 20 = 220 chars: train 198, validation 22
    let text = "hello world".repeat(20);
    let c = CharCorpus::from_text(&text).unwrap();
    // distinct characters by code point: ' ', d, e, h, l, o, r, w
    assert_eq!(c.vocab_size(), 8);
    assert_eq!(c.encode("hello").unwrap(), vec![3, 2, 4, 4, 5]);
    assert_eq!(c.decode(&[7, 5, 6, 4, 1, 0]).unwrap(), "world ");
    assert_eq!((c.len(Split::Train), c.len(Split::Validation)), (198, 22));
    let mut rng = kiln::rng::Rng::new(1);
    let (x, y) = c.batch(Split::Train, &mut rng, 3, 5).unwrap();
    assert_eq!((x.shape(), y.shape()), (&[3, 5][..], &[15][..]));
    for w in 0..3 {
        let xs = c.decode(&x.data()[w * 5..w * 5 + 5]).unwrap();
        let ys = c.decode(&y.data()[w * 5..w * 5 + 5]).unwrap();
        // each window is a piece of the text and its targets are shifted by one
        assert!(
            text.contains(&format!("{xs}{}", ys.chars().last().unwrap())),
            "{xs:?}"
        );
        assert_eq!(xs[1..], ys[..4]);
    }
    // validation windows come from the last 22 characters only
    let tail = &text[198..];
    let (x, _) = c.batch(Split::Validation, &mut rng, 4, 21).unwrap();
    for w in x.data().chunks(21) {
        assert!(tail.contains(&c.decode(w).unwrap()));
    }
}

#[test]
fn bad_text_corpora_and_requests_are_errors_naming_what_was_wrong() {
    let err = |r: kiln::Result<CharCorpus>| r.expect_err("an error").to_string();
    assert!(err(CharCorpus::from_text("a")).contains("at least 2 characters"));
    let c = CharCorpus::from_text("abcabcabcabc").unwrap();
    let e = c.encode("abz").unwrap_err().to_string();
    assert!(e.contains("'z'") && e.contains("vocabulary of 3"), "{e}");
    let e = c.decode(&[0, 3]).unwrap_err().to_string();
    assert!(e.contains("id 3") && e.contains("0..3"), "{e}");
    assert!(c.decode(&[-1]).is_err());
    let mut rng = kiln::rng::Rng::new(0);
    // validation holds 2 characters: no window of 2 and its next character
    let e = c
        .batch(Split::Validation, &mut rng, 1, 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Validation split has 2 characters"), "{e}");
    assert!(c.batch(Split::Train, &mut rng, 0, 2).is_err());
    assert!(c.batch(Split::Train, &mut rng, 1, 0).is_err());
    assert!(c.batch(Split::Train, &mut rng, usize::MAX, 2).is_err());
    // files: missing, not UTF-8 (with the offset), empty
    let dir = std::env::temp_dir().join(format!("kiln-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let e = err(CharCorpus::from_file(&dir.join("missing.txt")));
    assert!(
        e.contains("missing.txt") && e.contains("cannot read"),
        "{e}"
    );
    std::fs::write(dir.join("latin1.txt"), b"caf\xe9 au lait").unwrap();
    let e = err(CharCorpus::from_file(&dir.join("latin1.txt")));
    assert!(
        e.contains("latin1.txt") && e.contains("not UTF-8") && e.contains("byte 3"),
        "{e}"
    );
    std::fs::write(dir.join("empty.txt"), b"").unwrap();
    let e = err(CharCorpus::from_file(&dir.join("empty.txt")));
    assert!(e.contains("empty.txt") && e.contains("at least 2"), "{e}");
    // a multi-byte character counts once
    std::fs::write(dir.join("utf8.txt"), "naïve — naïve").unwrap();
    let c = CharCorpus::from_file(&dir.join("utf8.txt")).unwrap();
    assert_eq!(c.len(Split::Train) + c.len(Split::Validation), 13);
}

"""Data directory resolution, SOURCES.txt checks and downloads (through file:// URLs)."""
import hashlib
import shutil

import pytest

from data_pipelines import datadir, readers
from data_pipelines.readers import DataError

# data: the tests that take the data_dir fixture (tests/conftest.py marks them)
pytestmark = [pytest.mark.fast]


def test_resolve_data_dir_order(tmp_path, monkeypatch):
  flag_dir, env_dir = tmp_path / "flag", tmp_path / "env"
  flag_dir.mkdir()
  env_dir.mkdir()
  monkeypatch.setenv("MLIR_DATA_DIR", str(env_dir))
  assert datadir.resolve_data_dir(flag_dir) == flag_dir
  assert datadir.resolve_data_dir() == env_dir
  monkeypatch.delenv("MLIR_DATA_DIR")
  # ../shared/data beside the repository.
  (tmp_path / "shared" / "data").mkdir(parents=True)
  monkeypatch.setattr(datadir, "REPO_ROOT", tmp_path / "repo")
  assert datadir.resolve_data_dir() == tmp_path / "shared" / "data"
  with pytest.raises(DataError, match=f"{tmp_path / 'missing'}: data directory from --data_dir"):
    datadir.resolve_data_dir(tmp_path / "missing")
  monkeypatch.setattr(datadir, "REPO_ROOT", tmp_path / "nowhere" / "repo")
  with pytest.raises(DataError, match="no data directory"):
    datadir.resolve_data_dir()


def test_parse_sources(data_dir):
  sources = datadir.parse_sources(data_dir / "xquad_r" / "SOURCES.txt")
  names = [s.name for s in sources]
  assert names == [f"{l}.json" for l in readers.XQUAD_R_LANGUAGES] + ["LICENSE", "README.md"]
  en = sources[names.index("en.json")]
  assert (en.repo, en.path, en.size) == ("google-research-datasets/lareqa", "xquad-r/en.json", 628651)
  assert en.url() == ("https://raw.githubusercontent.com/google-research-datasets/lareqa/"
                      "9bc8c7fb6dd8d01d72a05a93c2cb96882b0d299c/xquad-r/en.json")
  # The sha256 prefix is that of the actual file (independent hashlib computation).
  assert hashlib.sha256((data_dir / "xquad_r" / "en.json").read_bytes()).hexdigest().startswith(en.sha256_prefix)


def test_malformed_sources_line(tmp_path):
  path = tmp_path / "SOURCES.txt"
  path.write_text("# note\nen.json\towner/repo@abc:x/en.json\t12 bytes\tmd5:00\tMIT\n")
  with pytest.raises(DataError, match=f"{path}: line 2: malformed SOURCES.txt line"):
    datadir.parse_sources(path)


@pytest.mark.parametrize("folder", ["xquad_r", "mlqa_r", "tydiqa_goldp"])
def test_packaged_sources_match_the_data_dir(data_dir, folder):
  packaged = datadir.parse_sources(datadir.PACKAGED_SOURCES / f"{folder}.txt")
  assert packaged == datadir.parse_sources(data_dir / folder / "SOURCES.txt")


def test_verify_existing_files_without_fetching(data_dir, tmp_path):
  def no_fetch(url, destination):
    raise AssertionError(f"unexpected download of {url}")
  found = datadir.verify_or_download(data_dir, "mlqa_r", download_dir=tmp_path, fetch=no_fetch)
  assert sorted(found) == sorted([f"{l}.json" for l in readers.MLQA_R_LANGUAGES] + ["LICENSE", "README.md"])
  assert all(path.parent == data_dir / "mlqa_r" for path in found.values())


def _copy_folder(data_dir, tmp_path, names):
  folder = tmp_path / "data" / "xquad_r"
  folder.mkdir(parents=True)
  for name in ["SOURCES.txt", *names]:
    shutil.copy(data_dir / "xquad_r" / name, folder / name)
    (folder / name).chmod(0o644)
  return folder.parent


def test_corrupted_file_is_detected(data_dir, tmp_path):
  root = _copy_folder(data_dir, tmp_path, ["en.json", "de.json"])
  with (root / "xquad_r" / "en.json").open("r+b") as f:  # same size, one byte changed
    f.seek(1000)
    byte = f.read(1)
    f.seek(1000)
    f.write(bytes([byte[0] ^ 1]))
  with (root / "xquad_r" / "de.json").open("ab") as f:    # one byte longer
    f.write(b" ")
  with pytest.raises(DataError, match=r"en\.json: sha256 .* expected 7b0954f39297c27a"):
    datadir.verify_or_download(root, "xquad_r", ["en.json"], download_dir=tmp_path / "cache")
  with pytest.raises(DataError, match=r"de\.json: size 732157 bytes, expected 732156"):
    datadir.verify_or_download(root, "xquad_r", ["de.json"], download_dir=tmp_path / "cache")
  with pytest.raises(DataError, match="xx.json not listed in its SOURCES.txt"):
    datadir.verify_or_download(root, "xquad_r", ["xx.json"], download_dir=tmp_path / "cache")


def test_corrupted_data_dir_file_is_refused_not_replaced(data_dir, tmp_path, capsys):
  """A user's file that fails its check is never fetched again over (pooch would: it
  re-downloads a file whose hash differs, ARCHITECTURE.md "Hand-written pieces and why")
  and is one `error:` line naming it."""
  root = _copy_folder(data_dir, tmp_path, ["en.json"])
  path = root / "xquad_r" / "en.json"
  corrupted = path.read_bytes()[:-1] + b"!"
  path.write_bytes(corrupted)
  calls = []

  def fetch(url, destination):
    calls.append(url)
    shutil.copy(data_dir / "xquad_r" / "en.json", destination)
  with pytest.raises(DataError, match=rf"{path}: sha256 .* expected 7b0954f39297c27a"):
    datadir.verify_or_download(root, "xquad_r", ["en.json"], download_dir=tmp_path / "cache",
                               fetch=fetch)
  assert calls == [] and path.read_bytes() == corrupted
  assert not (tmp_path / "cache" / "xquad_r" / "en.json").exists()
  with pytest.raises(SystemExit) as exit_info:
    datadir.main(["--data_dir", str(root), "--folders", "xquad_r", "--files", "en.json",
                  "--download_dir", str(tmp_path / "cache")])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()        # tqdm's bar, then the error
  assert [l for l in err if l.startswith("error:")] == err[-1:], err
  assert err[-1].startswith(f"error: {path}: sha256 ") and "Traceback" not in "".join(err)
  assert path.read_bytes() == corrupted


def _mirror(data_dir, tmp_path, names, corrupt=()):
  """A fake upstream laid out like raw.githubusercontent.com/{repo}/{commit}/{path}."""
  mirror = tmp_path / "mirror"
  for source in datadir.parse_sources(data_dir / "xquad_r" / "SOURCES.txt"):
    if source.name in names:
      target = mirror / source.repo / source.commit / source.path
      target.parent.mkdir(parents=True, exist_ok=True)
      data = (data_dir / "xquad_r" / source.name).read_bytes()
      target.write_bytes(data[:-1] + b"!" if source.name in corrupt else data)
  return "file://" + str(mirror) + "/{repo}/{commit}/{path}"


def test_download_missing_files_through_file_urls(data_dir, tmp_path, monkeypatch):
  root = _copy_folder(data_dir, tmp_path, [])  # SOURCES.txt only
  template = _mirror(data_dir, tmp_path, ["en.json", "th.json"])
  cache = tmp_path / "cache"
  found = datadir.verify_or_download(root, "xquad_r", ["en.json", "th.json"],
                                     download_dir=cache, url_template=template)
  assert found == {"en.json": cache / "xquad_r" / "en.json", "th.json": cache / "xquad_r" / "th.json"}
  assert found["th.json"].read_bytes() == (data_dir / "xquad_r" / "th.json").read_bytes()
  assert sorted(p.name for p in (cache / "xquad_r").iterdir()) == ["en.json", "th.json"]  # no partials

  # A second call finds the cached files and fetches nothing.
  calls = []
  datadir.verify_or_download(root, "xquad_r", ["en.json"], download_dir=cache,
                             fetch=lambda url, dest: calls.append(url))
  assert calls == []

  # The readers find downloaded files in the user cache when the data dir lacks them.
  monkeypatch.setenv("MLIR_TRAIN_CACHE", str(tmp_path / "user_cache"))
  shutil.copytree(cache / "xquad_r", datadir.cache_dir() / "xquad_r")
  assert len(readers.read_xquad_r(root, "th").candidates) == 852


def test_injected_fetch_and_packaged_sources(tmp_path, data_dir):
  """No data dir at all: the packaged SOURCES.txt gives the upstream URL."""
  seen = []

  def fetch(url, destination):
    seen.append(url)
    destination.write_bytes((data_dir / "tydiqa_goldp" / "bengali_tydiqa_dev.json").read_bytes())

  found = datadir.verify_or_download(None, "tydiqa_goldp", ["bengali_tydiqa_dev.json"],
                                     download_dir=tmp_path, fetch=fetch)
  assert seen == ["https://raw.githubusercontent.com/sagorbrur/tydiqa-language-specific/"
                  "55c6649475e0765f717a6d32a173c6664096a8ce/language_data/bengali/bengali_tydiqa_dev.json"]
  assert found["bengali_tydiqa_dev.json"] == tmp_path / "tydiqa_goldp" / "bengali_tydiqa_dev.json"


def test_corrupted_download_is_rejected_and_not_kept(data_dir, tmp_path):
  root = _copy_folder(data_dir, tmp_path, [])
  template = _mirror(data_dir, tmp_path, ["vi.json"], corrupt=["vi.json"])
  cache = tmp_path / "cache"
  with pytest.raises(DataError, match=r"vi\.json: downloaded from file://.*xquad-r/vi\.json but it does not match"):
    datadir.verify_or_download(root, "xquad_r", ["vi.json"], download_dir=cache, url_template=template)
  assert list((cache / "xquad_r").iterdir()) == []

  def failing(url, destination):
    raise OSError("network unreachable")
  with pytest.raises(DataError, match=r"vi\.json: download from https://raw.* failed \(network unreachable\)"):
    datadir.verify_or_download(root, "xquad_r", ["vi.json"], download_dir=cache, fetch=failing)


def test_locate_missing_file_says_how_to_fetch(tmp_path, monkeypatch):
  monkeypatch.setenv("MLIR_TRAIN_CACHE", str(tmp_path / "cache"))
  with pytest.raises(DataError, match=r"en\.json: file not found .*python -m data_pipelines.datadir --folders xquad_r"):
    readers.read_xquad_r(tmp_path, "en")


def test_cli_verifies(data_dir, tmp_path, capsys):
  datadir.main(["--data_dir", str(data_dir), "--folders", "xquad_r", "--files", "en.json", "zh.json",
                "--download_dir", str(tmp_path)])
  assert "xquad_r: 2 files verified" in capsys.readouterr().out
  with pytest.raises(SystemExit) as exit_info:
    datadir.main(["--data_dir", str(tmp_path / "nope")])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and "does not exist" in err[0]

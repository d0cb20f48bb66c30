"""REELHOOK_MEDIA_URL: unset means the media folder; s3://bucket/prefix a bucket, reached with the AWS_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.media import open_media
from receiver.settings import S3Media, Secret, Settings, SettingsError
from receiver.startup import startup_lines
from storage.media.local import LocalMediaStore
from storage.media.s3 import S3MediaStore


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"REELHOOK_DATA_DIR": str(tmp_path)} | env)


def test_unset_means_the_media_folder_in_the_data_dir(tmp_path: Path) -> None:
    plain = settings(tmp_path)
    assert plain.media_s3 is None
    media = open_media(plain)
    assert isinstance(media, LocalMediaStore) and media.root == tmp_path.resolve() / "media"


def test_an_s3_url_names_the_bucket_and_the_aws_variables_reach_it(tmp_path: Path) -> None:
    s3 = settings(
        tmp_path,
        REELHOOK_MEDIA_URL="s3://studio-media/reelhook/prod/",
        AWS_ENDPOINT_URL="https://account.r2.cloudflarestorage.com/",
        AWS_REGION="auto",
        AWS_ACCESS_KEY_ID="AKIAEXAMPLE",
        AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG",
        AWS_COPY_IF_NOT_EXISTS="header:cf-copy-destination-if-none-match:*",
    )
    assert s3.media_s3 == S3Media(
        url="s3://studio-media/reelhook/prod",
        endpoint="https://account.r2.cloudflarestorage.com",
        region="auto",
        access_key_id="AKIAEXAMPLE",
        secret_access_key=Secret("wJalrXUtnFEMI/K7MDENG"),
        copy_if_not_exists="header:cf-copy-destination-if-none-match:*",
    )
    assert "wJalr" not in repr(s3)
    media = open_media(s3)
    assert (
        isinstance(media, S3MediaStore) and media.describe("r/j/0.mp4") == "s3://studio-media/reelhook/prod/r/j/0.mp4"
    )


@pytest.mark.parametrize(
    "url",
    ["/srv/media", "file:///srv/media", "http://bucket/x", "s3://", "s3://Studio/x", "s3://ab", "s3://bucket/a/../b",
     "s3://bucket/a//b", "s3://bucket/x?versionId=1", "s3://user@bucket/x"],
)  # fmt: skip
def test_anything_but_an_s3_url_is_refused_naming_the_variable(tmp_path: Path, url: str) -> None:
    with pytest.raises(SettingsError, match=r"^REELHOOK_MEDIA_URL must be s3://bucket/prefix"):
        settings(tmp_path, REELHOOK_MEDIA_URL=url)


def test_a_key_id_without_its_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together"):
        settings(tmp_path, REELHOOK_MEDIA_URL="s3://bucket/x", AWS_ACCESS_KEY_ID="AKIAEXAMPLE")


def test_an_endpoint_that_is_not_a_url_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="^AWS_ENDPOINT_URL must be an http"):
        settings(tmp_path, REELHOOK_MEDIA_URL="s3://bucket/x", AWS_ENDPOINT_URL="localhost:8333")


def test_start_up_says_where_media_go(tmp_path: Path) -> None:
    local = settings(tmp_path)
    bucket = settings(tmp_path, REELHOOK_MEDIA_URL="s3://studio-media/prod", AWS_ENDPOINT_URL="http://127.0.0.1:8333")
    lines = {name: startup_lines(s, public_url_from="default", rules=None, paused=None) for name, s in
             (("local", local), ("bucket", bucket))}  # fmt: skip
    assert f"media: {tmp_path.resolve() / 'media'} (REELHOOK_MEDIA_URL is not set)" in lines["local"]
    assert "media: s3://studio-media/prod at http://127.0.0.1:8333 (from REELHOOK_MEDIA_URL)" in lines["bucket"]

"""Issue 7: every file of the malformed-input corpus gives its clear message through both front ends,
the command line (exit code 2, one line on stderr) and the app's upload handler."""
import pytest

from corpus_cases import CORPUS, assert_one_sentence
from pd_core.cli import main


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.file)
def test_command_line_on_the_corpus(case, capsys):
    code = main(["classify", str(case.path), "--json"])
    out, err = capsys.readouterr()
    if case.ok:
        assert code == 0 and err == ""
        assert '"top5"' in out
    else:
        assert code == 2 and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1
        message = lines[0].split(": ", 2)[-1]  # "error: PATH: message"
        assert_one_sentence(message, case.file)
        assert case.message_contains in message.lower()


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.file)
def test_app_upload_handler_on_the_corpus(case):
    import streamlit as st

    from ui import state
    from ui.images import accept_upload

    previous = state.CurrentImage(name="before", source="gallery", pil=None, label_index=1, uid="before")
    st.session_state.clear()
    st.session_state[state.IMAGE] = previous
    message = accept_upload(case.path.read_bytes(), case.file, file_id=case.file)
    if case.ok:
        assert message is None
        assert st.session_state[state.IMAGE] is not previous
    else:
        assert_one_sentence(message, case.file)
        assert case.message_contains in message.lower()
        assert st.session_state[state.IMAGE] is previous  # nothing lost

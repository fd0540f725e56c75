"""The jobs, side by side on one path: ask -> grade -> record (``ask``) -> summarise (``summary``).

- ``eval``: greedy answers on one dataset.
- ``probe``: accuracy and confidence under image degradations (perceptual bluntness).
- ``regrade``: re-extract and re-score a finished run from its stored traces, without the model.

CA-TTS (``tts``) and CDRL (``train``) come next on the same path.
"""

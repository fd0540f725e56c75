"""CA-TTS: confidence-aware test-time scaling (spec sections 6-7). Pure voting logic lives in :mod:`catts.tts.vote`."""

"""The shipped pytest fixtures, used the way a user would: in their own project."""

from __future__ import annotations

import pytest

USER_TESTS = '''
import pytest
from callbridge import Agent
from callbridge.testing import (LocalRealtimeServer, Reply, TwilioCaller, Utterance,
                                babble, scripted_brain)

async def test_the_echo_agent_says_my_words_back(autojump_clock, simulate_call):
    caller = TwilioCaller(utterances=[Utterance(at=0.5, duration=1.0)], hangup_at=4)
    call = await simulate_call(caller)
    call.check_protocols()
    assert call.result.reason == "caller_hangup"
    echoed = call.caller.heard_audio().strip(b"\\xff")
    assert len(echoed) >= 7000 and echoed in bytes(call.caller.sent_audio)

class TestScriptedModel:
    @pytest.fixture
    def realtime_model(self):
        return LocalRealtimeServer(scripted_brain([Reply(audio=babble(3000), transcript="Hi!")]))

    async def test_my_greeting_is_cut_when_the_caller_talks(self, autojump_clock, simulate_call):
        agent = Agent(greeting="Say hi.")
        caller = TwilioCaller(utterances=[Utterance(at=1.0, duration=0.5)], hangup_at=3)
        call = await simulate_call(caller, agent=agent)
        call.check_protocols()
        [(item, heard_ms)] = call.session.truncations
        assert len(call.caller.clears) == 1 and 900 <= heard_ms <= 1100
        assert call.times("clear") == call.caller.clears
'''


def test_a_user_tests_their_agent_with_the_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ntrio_mode = true\nfilterwarnings = error\n")
    pytester.makepyfile(test_my_agent=USER_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)

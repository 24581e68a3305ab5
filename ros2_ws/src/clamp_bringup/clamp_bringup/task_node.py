"""Task node: the one publisher of rig.TASK_TOPIC on the robot (clamp_sim publishes its own in simulation).

The operator sets the task three ways, all ending here:
- the profile (`policy.task`) or the launch parameter `task`;
- at run time: `ros2 param set /task task "put the cube in the bowl"` (the parameter service), or
- `python -m clamp_bringup.set_task "put the cube in the bowl"` (the same, with a clear error when the
  node is not running).

It publishes latched (rig.TASK_LATCHED: RELIABLE + TRANSIENT_LOCAL, the QoS every task subscriber
uses) on every change, and re-publishes the current task every `republish_s` so that a subscriber that
joins late with a volatile subscription (or after a restart) gets it too. An empty task is not
published; the inference node then says it waits for one.
"""

from __future__ import annotations

from clamp_core import rig
from clamp_core.ros import declare_profile, latched_publisher_qos, spin_node
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from std_msgs.msg import String

NODE_NAME = "task"


class TaskNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__(kwargs.pop("node_name", NODE_NAME), **kwargs)
        profile = declare_profile(self)
        default = str((profile.get("policy") or {}).get("task", "")) if profile else ""
        self.task = str(self.declare_parameter("task", default).value).strip()
        period = float(self.declare_parameter("republish_s", 1.0).value)
        self._pub = self.create_publisher(String, rig.TASK_TOPIC, latched_publisher_qos())
        self.add_on_set_parameters_callback(self._on_set)
        self.published = 0
        self._publish()
        self.create_timer(period, self._publish)

    def _on_set(self, params) -> SetParametersResult:
        for p in params:
            if p.name == "task":
                if not isinstance(p.value, str):
                    return SetParametersResult(successful=False, reason="task must be a string (quote it)")
                self.task = p.value.strip()
                self.get_logger().info(f"task: {self.task!r}")
                self._publish()
        return SetParametersResult(successful=True)

    def _publish(self) -> None:
        if self.task:
            self._pub.publish(String(data=self.task))
            self.published += 1


def main(args=None) -> None:
    spin_node(TaskNode, args)


if __name__ == "__main__":
    main()
